"""System (POSIX) shared memory for clients on the same host, as Triton's
`SystemSharedMemoryRegister` offers it: a client registers a region of a /dev/shm object by
name, then names it in an input's or requested output's parameters
(``shared_memory_region``, ``shared_memory_byte_size``, ``shared_memory_offset``) instead of
sending the bytes. Inputs are read from the region into raw contents before decoding; outputs
are written into their region and left out of ``raw_output_contents``.

Only objects directly under /dev/shm can be registered (the key is one name, with or without
its leading ``/``), so a client cannot make the server map any other file.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
from reachrank.kserve.v2 import grpc_service_pb2 as pb

from engine.errors import InvalidArgument, NotFound, ServingError

SHM_ROOT = Path("/dev/shm")
REGION, BYTE_SIZE, OFFSET = (
    "shared_memory_region",
    "shared_memory_byte_size",
    "shared_memory_offset",
)


class AlreadyExists(ServingError):
    code = grpc.StatusCode.ALREADY_EXISTS


@dataclass
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    memory: mmap.mmap


class SharedMemoryRegions:
    """Registered regions by name; thread-safe."""

    def __init__(self) -> None:
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not name:
            raise InvalidArgument("a shared memory region needs a name")
        object_name = key[1:] if key.startswith("/") else key
        if not object_name or "/" in object_name or object_name in (".", ".."):
            raise InvalidArgument(
                f"shared memory key {key!r} must name one object under {SHM_ROOT} (e.g. '/data')"
            )
        with self._lock:
            if name in self._regions:
                raise AlreadyExists(f"shared memory region {name!r} already in manager")
            try:
                fd = os.open(SHM_ROOT / object_name, os.O_RDWR)
            except OSError as exc:
                raise InvalidArgument(
                    f"Unable to open shared memory region: {key!r} ({exc.strerror})"
                ) from None
            try:
                size = os.fstat(fd).st_size
                if byte_size <= 0 or offset + byte_size > size:
                    raise InvalidArgument(
                        f"shared memory region {name!r}: offset {offset} + byte_size {byte_size} "
                        f"exceeds the {size} bytes of {key!r}"
                    )
                memory = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            self._regions[name] = Region(name, key, offset, byte_size, memory)

    def unregister(self, name: str) -> None:
        """Forget ``name`` (every region when empty); unknown names are fine, as in Triton."""
        with self._lock:
            gone = list(self._regions) if not name else [name]
            for n in gone:
                region = self._regions.pop(n, None)
                if region is not None:
                    region.memory.close()

    def status(self, name: str) -> list[Region]:
        with self._lock:
            if not name:
                return list(self._regions.values())
            if name not in self._regions:
                raise NotFound(f"Unable to find system shared memory region: {name!r}")
            return [self._regions[name]]

    def _span(
        self, parameters: Mapping[str, pb.InferParameter], where: str
    ) -> tuple[Region, int, int]:
        name = parameters[REGION].string_param
        with self._lock:
            region = self._regions.get(name)
        if region is None:
            raise InvalidArgument(f"{where}: shared memory region {name!r} is not registered")
        if BYTE_SIZE not in parameters:
            raise InvalidArgument(f"{where}: {BYTE_SIZE} is required with {REGION}")
        size = parameters[BYTE_SIZE].int64_param
        offset = parameters[OFFSET].int64_param if OFFSET in parameters else 0
        if size < 0 or offset < 0 or offset + size > region.byte_size:
            raise InvalidArgument(
                f"{where}: offset {offset} + byte_size {size} exceed region {name!r} "
                f"({region.byte_size} bytes)"
            )
        return region, region.offset + offset, size

    def read(self, parameters: Mapping[str, pb.InferParameter], where: str) -> bytes:
        region, start, size = self._span(parameters, where)
        return bytes(region.memory[start : start + size])

    def write(self, parameters: Mapping[str, pb.InferParameter], data: bytes, where: str) -> None:
        region, start, size = self._span(parameters, where)
        if len(data) > size:
            raise InvalidArgument(
                f"{where}: {len(data)} bytes do not fit the {size} bytes given in {BYTE_SIZE}"
            )
        region.memory[start : start + len(data)] = data


def inputs_from_shm(
    request: pb.ModelInferRequest, regions: SharedMemoryRegions
) -> pb.ModelInferRequest:
    """``request`` with every shared-memory input's bytes read into raw contents (the request
    itself when none uses shared memory)."""
    if not any(REGION in t.parameters for t in request.inputs):
        return request
    raw = iter(request.raw_input_contents)
    contents = []
    for tensor in request.inputs:
        where = f"input {tensor.name!r}"
        if REGION in tensor.parameters:
            contents.append(regions.read(tensor.parameters, where))
        elif tensor.HasField("contents"):
            raise InvalidArgument(
                f"{where}: typed contents cannot be mixed with inputs in shared memory; "
                "send it as raw contents"
            )
        else:
            data = next(raw, None)
            if data is None:
                raise InvalidArgument(
                    f"{where} has neither raw contents nor a shared memory region"
                )
            contents.append(data)
    rewritten = pb.ModelInferRequest()
    rewritten.CopyFrom(request)
    del rewritten.raw_input_contents[:]
    rewritten.raw_input_contents.extend(contents)
    for tensor in rewritten.inputs:
        for key in (REGION, BYTE_SIZE, OFFSET):
            tensor.parameters.pop(key, None)
    return rewritten


def outputs_to_shm(
    request: pb.ModelInferRequest, response: pb.ModelInferResponse, regions: SharedMemoryRegions
) -> None:
    """Write each output its request asked to get in shared memory into that region, and
    leave it out of the raw contents (its tensor carries the region's parameters instead)."""
    wanted = {o.name: o.parameters for o in request.outputs if REGION in o.parameters}
    if not wanted:
        return
    if not response.raw_output_contents:
        raise InvalidArgument("outputs in shared memory need raw contents (send raw inputs)")
    kept = []
    for tensor, data in zip(response.outputs, response.raw_output_contents, strict=True):
        parameters = wanted.get(tensor.name)
        if parameters is None:
            kept.append(data)
            continue
        regions.write(parameters, data, f"output {tensor.name!r}")
        for key in (REGION, BYTE_SIZE, OFFSET):
            if key in parameters:
                tensor.parameters[key].CopyFrom(parameters[key])
    del response.raw_output_contents[:]
    response.raw_output_contents.extend(kept)
