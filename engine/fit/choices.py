"""The Linear-fit choices as plain names, importable without torch (the CLI parser uses them)."""

MODELS = ("linear", "mlp")
ACTIVATION_NAMES = ("tanh", "relu", "sigmoid", "elu", "gelu")
OPTIMIZERS = ("gd", "sgd", "momentum", "adam")
DEFAULT_HIDDEN = 13

# What the tab's learning-rate and input-scale boxes hold; the engine's advice stays inside them.
LR_RANGE = (1e-12, 100.0)
INPUT_SCALE_RANGE = (1e-12, 1000.0)
