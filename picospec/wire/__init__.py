"""What crosses the network: the sparse codec and the gRPC protocol."""
