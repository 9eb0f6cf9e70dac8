"""One registered user's session on the echo network."""

from slidge import BaseSession

from gateway.runtime import network_config
from gateway.slidge_fixes import push_to_roster

from .client import EchoClient
from .config import Config
from .contact import Contact
from .translate import ECHO_CONTACT, EchoEvent


class Session(BaseSession[Contact]):
    client: EchoClient

    async def login(self) -> str:
        cfg = network_config(Config)
        self.client = EchoClient(self.on_echo_event, delay=cfg.delay_ms / 1000)
        self.create_task(self.client.run())
        echo = await self.contacts.by_legacy_id(ECHO_CONTACT)
        await push_to_roster(echo)
        echo.online()
        nickname = self.user.legacy_module_data.get("nickname", "?")
        return f"Connected to the echo network as {nickname}"

    async def logout(self) -> None:
        self.cancel_all_tasks()

    async def on_echo_event(self, event: EchoEvent) -> None:
        echo = await self.contacts.by_legacy_id(ECHO_CONTACT)
        if event.corrects is None:
            echo.send_text(event.text, legacy_msg_id=event.msg_id)
        else:
            echo.correct(event.corrects, event.text)
