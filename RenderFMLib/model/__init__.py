"""The Render-FM feedforward network: architecture, weights I/O, input features and prediction."""
