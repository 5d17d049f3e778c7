"""Files on disk -> networks on a device: the weights registry, downloads, loaders."""
