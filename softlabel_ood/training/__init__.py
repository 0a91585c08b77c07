"""Training: the compiled steps, the loop and its feed, losses and soft labels, the optimizer,
model setup, checkpoints.
"""
