// The same trivial endpoint on Node's grpc-js (one event loop, no GIL): answers faster than
// a Python server can, so the load generator rather than the server becomes the limit.
//   npm install @grpc/grpc-js && node bench/trivial_endpoint.js 50777
const grpc = require('@grpc/grpc-js');
const serving = Buffer.from([0x08, 0x01]); // HealthCheckResponse{status: SERVING}
const raw = (b) => b;
const service = {
  Check: {
    path: '/grpc.health.v1.Health/Check', requestStream: false, responseStream: false,
    requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw,
  },
};
const server = new grpc.Server();
server.addService(service, { Check: (_call, callback) => callback(null, serving) });
server.bindAsync('127.0.0.1:' + (process.argv[2] || 0), grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) throw err;
  console.log(port);
});
