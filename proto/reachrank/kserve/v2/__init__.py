"""Generated code for the vendored KServe v2 / Triton protocol (protobuf package `inference`:
grpc_service.proto, model_config.proto); regenerate with `make proto`."""
