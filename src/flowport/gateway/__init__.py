"""The endpoint router: auth, traffic split, mirroring, instance choice, endpoint metrics.

The control plane pushes routes (``Gateway.publish``/``withdraw``) and the runtime pushes
ready instances (``Gateway.set_instances``); the gateway never reads the store.
"""

from flowport.gateway.app import Gateway
from flowport.gateway.metrics import CONTENT_TYPE
from flowport.gateway.routes import DataCollection, DeploymentRoute, EndpointRoute, key_digest
from flowport.gateway.tokens import IssuedToken, TokenSigner, signing_key

__all__ = [
    "CONTENT_TYPE",
    "DataCollection",
    "DeploymentRoute",
    "EndpointRoute",
    "Gateway",
    "IssuedToken",
    "TokenSigner",
    "key_digest",
    "signing_key",
]
