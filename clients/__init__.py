"""ReachRank client SDK: needs only grpcio, protobuf and numpy."""
