"""The chapter's math written from scratch in NumPy, for teaching: tensor operations as explicit
loops, and training the network by hand (backprop, dropout, optimizers)."""
