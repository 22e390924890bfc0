"""Training, on the torch side: CIFAR-10 for training and the hold-out (`data`, no torch), the training
run in resumable pieces (`run`), quantization-aware training of the int8 model (`qat`, NNCF) and a
distillation teacher (`teacher`, OpenVINO). scripts/train.py, quantize_aware.py, teacher.py and
ship_weights.py are their command lines. Nothing on the serving path imports this package (the
import contracts in pyproject.toml)."""
