"""The OIP v2 gRPC messages, compiled from serving/grpc_predict_v2.proto when first imported.

Why not `grpc.protos_and_services`: it registers the messages in protobuf's default descriptor pool,
where `tritonclient.grpc` (and KServe's client) register the same names (`inference.ModelInferRequest`,
...) from their own file; whichever is imported second fails with "duplicate symbol". So grpcio-tools'
protoc compiles the file (next to this module, whatever the current directory or sys.path) into a
descriptor set, and the classes come from a pool of our own. No generated code is kept.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTO = Path(__file__).with_name("grpc_predict_v2.proto")
SERVICE = "inference.GRPCInferenceService"
#: the RPCs served, each (method, request message, response message)
METHODS = (("ServerLive", "ServerLiveRequest", "ServerLiveResponse"),
           ("ServerReady", "ServerReadyRequest", "ServerReadyResponse"),
           ("ModelReady", "ModelReadyRequest", "ModelReadyResponse"),
           ("ServerMetadata", "ServerMetadataRequest", "ServerMetadataResponse"),
           ("ModelMetadata", "ModelMetadataRequest", "ModelMetadataResponse"),
           ("ModelInfer", "ModelInferRequest", "ModelInferResponse"))


def _compile(proto: Path) -> descriptor_pb2.FileDescriptorSet:
    """The file's descriptor, as protoc writes it (a temporary file: protoc has no in-memory output)."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "descriptor.pb"
        if protoc.main(["protoc", f"-I{proto.parent}", f"--descriptor_set_out={out}", proto.name]) != 0:
            raise RuntimeError(f"protoc could not compile {proto} (its errors are above)")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _load() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    for file in _compile(PROTO).file:
        pool.Add(file)
    service = pool.FindServiceByName(SERVICE)
    declared = {(m.name, m.input_type.name, m.output_type.name) for m in service.methods}
    if declared != set(METHODS):
        raise RuntimeError(f"{PROTO.name} declares {sorted(declared)}, this module serves {sorted(METHODS)}")
    names = {n for _, request, response in METHODS for n in (request, response)} | {"InferParameter",
                                                                                     "InferTensorContents"}
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"inference.{n}")) for n in names}


#: message name (e.g. "ModelInferRequest") → its class; nested types are its attributes
#: (`MESSAGES["ModelInferResponse"].InferOutputTensor`)
MESSAGES = _load()
