"""A section -> events: guidance, the optimisation loop, the renderer. No folders, no Ray."""
