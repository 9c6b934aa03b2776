"""Evaluation: BLEU/chrF (sacreBLEU), perplexity, accuracy, metrics by length bucket."""
