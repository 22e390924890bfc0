"""train.py's recipes the end-to-end tests run: small enough for a test, the same code paths as a real run. Two steps
an epoch (20 training images, 10 a batch): a run in pieces of one step ends mid-epoch and at an epoch's end."""

SMALL_RUN = [
    *("--epochs", "2", "--batch-size", "10", "--warmup-epochs", "1", "--ema-decay", "0.9"),
    *("--holdout-per-class", "1", "--limit-per-class", "3", "--test-every", "1", "--cutout", "16"),
]
# Resuming is the same at any depth: a PyramidNet of 1 block per stage (depth 8) makes those runs quick.
QUICK_RUN = [*SMALL_RUN, "--blocks-per-stage", "1"]
