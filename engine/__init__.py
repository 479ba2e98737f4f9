"""ReachRank serving engine: model repository, runtime, pipelines and the gRPC server."""
