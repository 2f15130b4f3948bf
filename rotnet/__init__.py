"""rotnet: semi-supervised MNIST with rotation prediction as the pretext task."""
