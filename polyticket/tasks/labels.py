"""The label lists of the public datasets, in their ids' order, shared by the tasks and the
synthetic data so that ids in files, on the hub and in generated data mean the same."""

# WikiANN's ClassLabel order (IOB2 over PER, ORG, LOC)
WIKIANN_LABELS: tuple[str, ...] = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

# XNLI's label ids
XNLI_LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
