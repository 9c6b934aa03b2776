"""Decoding: greedy, beam search, sampling, key/value cache."""
