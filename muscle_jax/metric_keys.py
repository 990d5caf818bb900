"""The training metrics every method reports, named once (no JAX: report readers import it).

``mutual_information`` is the MI between the two unlabeled views' class
assignments: the quantity MUSCLE maximises, a diagnostic for the other
methods (0 without an unlabeled batch). A term may report more (a mask rate,
a threshold, ...): the trainer records every metric the step returns.
"""

# The total and the terms it sums, in the order the curves draw them.
LOSS_TERMS = ("total", "supervised", "consistency", "unsupervised", "addon", "mutual_information")
# Reported for every method: the loss terms and the ramped weights.
METRIC_KEYS = (*LOSS_TERMS, "consistency_weight", "unsupervised_weight")
