# Stub for the compiled kampx/auth/_digest.pyx (the digest check's hot path in C).
from typing import Any

BASE_ALGORITHM: dict[str, str]
HEX_LEN: dict[str, int]
QOPS: tuple[str, ...]

class DigestError(ValueError): ...

class Credentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    base_algorithm: str
    qop: str | None
    nc: str | None
    cnonce: str | None
    opaque: str | None
    sess: bool
    @property
    def nc_value(self) -> int: ...
    @property
    def user(self) -> str: ...

def md5_hexdigest(data: bytes | str) -> str: ...
def md5_response(
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    sess: bool,
    body: bytes,
) -> str: ...
def credentials(params: dict[str, str]) -> Credentials: ...
def find_params(values: Any, realm: str) -> dict[str, str] | DigestError | None: ...
def pick(values: Any, realm: str) -> Credentials | DigestError | None: ...
def b64url_decode(text: str) -> bytes | None: ...
def b64url_encode(raw: bytes) -> str: ...

class MacKey:
    size: int
    def __init__(self, key: bytes, size: int) -> None: ...
    def mac(self, data: bytes) -> bytes: ...

def open_nonce(text: str, key: MacKey) -> tuple[int, int, int, int] | None: ...
def seal_nonce(key: MacKey, version: int, issued_ms: int, index: int, generation: int) -> str: ...
