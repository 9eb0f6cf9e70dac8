"""Real servers on loopback, started and stopped by the end-to-end tests and `passerelle demo`.

Each wrapper (`Prosody`, `NgIrcd`, `InspIRCd`, `Ergo`, `PostgreSQL`...) writes its own config
under a work directory, picks free ports on 127.0.0.1, runs the server in the foreground as a child
process and stops exactly that process. A server that dies or never listens raises
`ServerStartError` with the end of its log.
"""

from gateway.localservers.biboumi import Biboumi
from gateway.localservers.ergo import Ergo
from gateway.localservers.errors import LocalServerError, ServerCommandError, ServerStartError
from gateway.localservers.inspircd import InspIRCd, ServicesLink
from gateway.localservers.ircservices import Atheme
from gateway.localservers.mail import MailServer
from gateway.localservers.ngircd import NgIrcd
from gateway.localservers.ports import free_port, wait_for_port
from gateway.localservers.postgres import PostgreSQL
from gateway.localservers.prosody import ComponentSpec, Prosody, patch_mod_privilege
from gateway.localservers.synapse import Synapse

__all__ = [
    "Atheme",
    "Biboumi",
    "ComponentSpec",
    "Ergo",
    "InspIRCd",
    "LocalServerError",
    "MailServer",
    "NgIrcd",
    "PostgreSQL",
    "Prosody",
    "ServerCommandError",
    "ServerStartError",
    "ServicesLink",
    "Synapse",
    "free_port",
    "patch_mod_privilege",
    "wait_for_port",
]
