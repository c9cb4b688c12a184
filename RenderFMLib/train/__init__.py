"""Training the Render-FM network: data sampling with cached ground truth, and the (distributed) training loop."""
