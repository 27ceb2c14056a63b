"""The LeNet-5 runs recorded with the v0.1 engine in tests/golden/v01 (see tests/golden/make_v01_golden.py).

1000 training images in batches of 256 (the last one 232), 4 micro-batches: 64-row
micro-batches go through the local parfor with compile-time sizes, the short last batch
through the variable-size one; batch 100 (25-row micro-batches) takes the one-piece path.
"""
SMALL = {"train_size": 1000, "test_size": 300, "epochs": 2, "seed": 5}

CASES = {
    "sgd-parfor": {**SMALL, "optimizer": "sgd", "batch_size": 256, "lr": 0.05},
    "lars-parfor-warmup": {**SMALL, "optimizer": "lars", "batch_size": 256, "lr": 2.0,
                           "schedule": "warmup_poly", "warmup_epochs": 0.5},
    "lamb-onepiece": {**SMALL, "optimizer": "lamb", "batch_size": 100, "lr": 0.01,
                      "schedule": "constant"},
    "lars-biases-onepiece": {**SMALL, "optimizer": "lars", "batch_size": 100, "lr": 1.0,
                             "include_biases": True, "weight_decay": 0.001},
}
