// grpc.testing.TestService on @grpc/grpc-js, for the Elixir client's
// interop tests. Loads ../proto/test_service.proto at runtime, binds
// 127.0.0.1 on a free port, prints "READY <port>" and serves until stdin
// closes. Behaviour mirrors ../python/interop_server.py.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ECHO_INITIAL = 'x-grpc-test-echo-initial';
const ECHO_TRAILING = 'x-grpc-test-echo-trailing-bin';

const definition = protoLoader.loadSync(path.join(__dirname, '..', 'proto', 'test_service.proto'), {
  keepCase: true,
  longs: Number,
  defaults: true,
  oneofs: true,
});
const testing = grpc.loadPackageDefinition(definition).grpc.testing;

function echoInitial(call) {
  const value = call.metadata.get(ECHO_INITIAL);
  if (value.length > 0) {
    const md = new grpc.Metadata();
    md.set(ECHO_INITIAL, value[0]);
    call.sendMetadata(md);
  }
}

function trailing(call) {
  const md = new grpc.Metadata();
  const value = call.metadata.get(ECHO_TRAILING);
  if (value.length > 0) md.set(ECHO_TRAILING, value[0]);
  return md;
}

function statusError(status, call) {
  return { code: status.code, details: status.message, metadata: trailing(call) };
}

const service = {
  EmptyCall(call, callback) {
    echoInitial(call);
    callback(null, {}, trailing(call));
  },

  UnaryCall(call, callback) {
    echoInitial(call);
    const status = call.request.response_status;
    if (status && status.code !== 0) {
      callback(statusError(status, call));
      return;
    }
    const size = call.request.response_size || 0;
    callback(null, { payload: { body: Buffer.alloc(size) } }, trailing(call));
  },

  StreamingOutputCall(call) {
    echoInitial(call);
    const params = call.request.response_parameters || [];
    let i = 0;
    let cancelled = false;
    call.on('cancelled', () => {
      cancelled = true;
    });

    const finish = () => {
      const status = call.request.response_status;
      if (status && status.code !== 0) {
        call.emit('error', statusError(status, call));
      } else {
        call.end(trailing(call));
      }
    };

    const next = () => {
      while (!cancelled && i < params.length) {
        const p = params[i++];
        if (p.interval_us > 0) {
          setTimeout(() => {
            if (cancelled) return;
            const ok = call.write({ payload: { body: Buffer.alloc(p.size) } });
            if (ok) next();
            else call.once('drain', next);
          }, p.interval_us / 1000);
          return;
        }
        if (!call.write({ payload: { body: Buffer.alloc(p.size) } })) {
          call.once('drain', next);
          return;
        }
      }
      if (!cancelled) finish();
    };
    next();
  },
};

const server = new grpc.Server({
  'grpc.max_send_message_length': 64 * 1024 * 1024,
  'grpc.max_receive_message_length': 64 * 1024 * 1024,
});
server.addService(testing.TestService.service, service);
server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  console.log(`READY ${port}`);
});

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
