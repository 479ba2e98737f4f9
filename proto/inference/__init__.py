"""Generated code for the vendored KServe v2 / Triton `inference` protocol (grpc_service.proto,
model_config.proto); regenerate with `make proto`."""
