"""The service's names on the wire, which client and server must spell alike: the method
paths (from the proto's descriptor) and the call-metadata keys."""

from __future__ import annotations

from asyncinf.transports.grpc import asyncinf_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["AsyncInference"].full_name
SESSION_METHOD = f"/{SERVICE}/Session"
INFO_METHOD = f"/{SERVICE}/Info"
# Call metadata: the client's id, so a reconnecting client may replace its own stale session.
CLIENT_ID_KEY = "x-asyncinf-client-id"
