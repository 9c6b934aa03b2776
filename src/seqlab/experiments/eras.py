"""The eras of the tour's timeline: year, people, the idea, and the limit each one left (from the seeds)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Era:
    key: str
    years: str
    title: str
    people: str
    idea: str
    limit: str


ERAS: list[Era] = [
    Era("feedforward", "1943–1986", "Neurons, perceptrons and backpropagation",
        "McCulloch & Pitts; Rosenblatt; Minsky & Papert; Rumelhart, Hinton & Williams",
        "Threshold units; the perceptron learning rule; multi-layer networks trained by the chain rule.",
        "A single unit draws one line (no XOR); fixed-size inputs cannot hold a sequence."),
    Era("recurrent", "1986–1997", "Recurrent networks and backpropagation through time",
        "Jordan; Elman; Werbos; Williams & Zipser",
        "A hidden state carried across time steps, trained by unrolling (BPTT).",
        "Gradients vanish or explode over long spans (Hochreiter 1991; Bengio et al. 1994)."),
    Era("gated", "1997–2014", "Gates: LSTM and GRU, bidirectional and stacked RNNs",
        "Hochreiter & Schmidhuber; Gers et al.; Schuster & Paliwal; Cho et al.",
        "An additive cell state with forget, input and output gates keeps gradients alive.",
        "Still strictly sequential; one fixed vector must summarise a whole input."),
    Era("attention", "2014–2016", "Encoder–decoder and attention",
        "Sutskever, Vinyals & Le; Cho et al.; Bahdanau, Cho & Bengio; Luong, Pham & Manning",
        "Map sequences to sequences; let the decoder look back at every encoder state.",
        "Recurrence still processes tokens one at a time."),
    Era("transformer", "2017–", "Attention is all you need",
        "Vaswani et al.; Katharopoulos et al.; Schlag, Irie & Schmidhuber; Gehring et al.; van den Oord et al.",
        "Self-attention, multi-head, positional encodings: every position in parallel; linear attention as fast weights.",
        "Quadratic cost in sequence length; order only through positional encodings."),
    Era("roads", "1990s–2016", "The roads not taken",
        "Weston, Chopra & Bordes; Sukhbaatar et al.; Graves, Wayne & Danihelka; Kalchbrenner et al.; Mikolov et al.; "
        "Pennington et al.; Bojanowski et al.",
        "External memories read by attention (memory networks, the Neural Turing Machine), dilated convolutions "
        "(ByteNet), static word vectors (word2vec, GloVe, fastText).",
        "Complex to train and hard to scale; one vector per word whatever its context."),
    Era("beyond", "2020–", "After the Transformer",
        "Gu, Goel & Ré; Gu & Dao; Kaplan et al.; Radford et al.; Brown et al.",
        "State-space models: a linear recurrence trained as a long convolution (S4D) or a selective scan (Mamba), "
        "linear in sequence length with a constant state; and larger models trained on more data.",
        "A fixed-size state must compress the whole past; gains from scale cost compute that grows with them."),
]
