"""Linear fit: the book's thermometer data (or a CSV), linear and MLP models, four optimizers,
the loss surface over (w, b), and a race between optimizers. ``data`` imports without torch."""
