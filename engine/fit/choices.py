"""The Linear-fit choices as plain names, importable without torch (the CLI parser uses them)."""

MODELS = ("linear", "mlp")
ACTIVATION_NAMES = ("tanh", "relu", "sigmoid", "elu", "gelu")
OPTIMIZERS = ("gd", "sgd", "momentum", "adam")
DEFAULT_HIDDEN = 13
