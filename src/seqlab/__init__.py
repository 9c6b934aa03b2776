"""seqlab: the road from the McCulloch–Pitts neuron to the Transformer, implemented, trained and measured."""

__version__ = "0.1.0"
