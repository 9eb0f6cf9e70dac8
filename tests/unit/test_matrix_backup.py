"""The recovery key, secret storage and key backup (secrets.py, backup.py) on published
test vectors, so that the expected values do not come from the code under test:

- matrix-rust-sdk's ``secret_storage.rs`` tests: a base58 recovery key and its bytes (and
  the typos it must refuse), a key description with its ``iv``/``mac`` opened by a
  recovery key, another opened by a passphrase (PBKDF2, 10 rounds);
- matrix-js-sdk's test data: the recovery key ``EsTc …`` is the backup key whose public
  key is ``hSDwCYkw…``; a ``KeyBackupData`` encrypted to it holds a Megolm session that
  decrypts a recorded event to "Hello world" (``spec/test-utils/test-data``), and an
  older one decrypts to "testytest" (``spec/unit/crypto/backup.spec.ts``).

The secret's own encryption (AES-CTR, HKDF) has no published vector here: the round trip
is checked against the tests' encryptor (`tests.e2e.backup_helpers`, on `cryptography`'s
HKDF), not the module's own derivation. Importing into nio's store runs on a real store.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import vodozemac

from legacy_plugins.matrix import backup, crosssign, crypto
from legacy_plugins.matrix.backup import BackedUpSession, BackupInfo
from legacy_plugins.matrix.client import load_nio, nio
from legacy_plugins.matrix.secrets import (
    SecretStorageError,
    WrongKey,
    decode_recovery_key,
    decrypt_secret,
    parse_key_description,
    unlock,
)
from tests.e2e.backup_helpers import encrypt_secret, megolm_decrypt

SSSS = "m.secret_storage.v1.aes-hmac-sha2"

# matrix-rust-sdk, crates/matrix-sdk-crypto/src/secret_storage.rs (tests)
RUST_BASE58 = "EsT           pRvZTnjck8    YrhRAtw XLS84Nr2r9S9LGAWDaExVAPBvLRK   "
RUST_BYTES = bytes(
    [
        *(159, 189, 70, 187, 52, 81, 113, 198, 246, 2, 44, 154, 37, 213, 104, 27),
        *(165, 78, 236, 106, 108, 73, 83, 243, 173, 192, 185, 110, 157, 145, 173, 163),
    ]
)
RUST_KEY = "EsTj 3yST y93F SLpB jJsz eAXc 2XzA ygD3 w69H fGaN TKBj jXEd"
RUST_KEY_INFO = {
    "algorithm": SSSS,
    "iv": "xv5b6/p3ExEw++wTyfSHEg==",
    "mac": "ujBBbXahnTAMkmPUX2/0+VTfUh63pGyVRuBcDMgmJC8=",
}
RUST_PASSPHRASE_INFO = {
    "algorithm": SSSS,
    "iv": "gH2iNpiETFhApvW6/FFEJQ",
    "mac": "9Lw12m5SKDipNghdQXKjgpfdj1/K7HFI2brO+UWAGoM",
    "passphrase": {
        "algorithm": "m.pbkdf2",
        "salt": "IuLnH7S85YtZmkkBJKwNUKxWF42g9O1H",
        "iterations": 10,
    },
}

# matrix-js-sdk, spec/test-utils/test-data/index.ts and spec/unit/crypto/backup.spec.ts
JS_RECOVERY_KEY = "EsTc LW2K PGiF wKEA 3As5 g5c4 BXwk qeeJ ZJV8 Q9fu gUMN UE4d"
JS_BACKUP_KEY = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo="
JS_BACKUP_PUBLIC = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo"
JS_BACKED_UP: dict[str, Any] = {
    "first_message_index": 1,
    "forwarded_count": 0,
    "is_verified": False,
    "session_data": {
        "ciphertext": "r6HRk2/Im2yJe5cLP8R81aVjFWjYWPHpw7TVxphiSK1cdIDZTTK57r6MfU+0i/mTPn+/PosT74OvYwCnehy2d1BPGxhDl8AhPcBu3//Kzlq2o5CssPsw+88gRehkAsPg9Zp5G9sL9to6giltvTWTbsaQpmvv3HLmBOYSFIxvyZrOT/Ffqu325f0IEsKcyV2BdIkw8Ob9Xt+VWoe4MYEGG6y1T8W125zeFgKWI4Ow76uput64H9zZjIo+Cc+hCTO9Ea4EnosSjizCotevkNck7C/zGgfhBikiohROb6SbaZgxicSsEDZ+f7brnri9yP3iXS3PMDHHpa1+XzG2VOG/Y9OQZpkPq+pbLrCC+NWJeJPslDAK5i+RURwzjnPmaHKCRHTq86CwhFyiCDf61MGwCY3xjrmBJg44BCdxWqCx0YJvwsvVqqnl4vTieUfrwThNPsQ81aVkDHvlmrgrTt8icDa8jTJhu34jem+pbRSEM5aJikV4B+zYiLz+dH/v6UpYA2eG8ReOvwpPXp6CAcIlplRPpWbMBeLFVcPkT4KAXTp9exFpB4on4pf8OsaDomlt4qAA0rhAZmhPWPKcU/A0Tz4gyMu54OivVtw1SPj+5Iq+YDQ8jB6Po3ApzMf6fwF9x/FjevbboFB05X2Jr0NrbFqXMOUwXHMgDAGiIWX8+gkmmbaiNWqg2etjN94pobQSGZelb18XGN7kuwMk+Zwk7A",
        "ephemeral": "q+P1WdRtEiPIEtNuuGrRcueZxUbLnSKdsuTAkxewXgU",
        "mac": "OibmACbORhI",
    },
}
JS_SESSION_ID = "ipdI6Zs/7DzFTEhiA2iGaMDfHkIYCleqXT6L+5e1/co"
JS_SENDER_KEY = "WimPd2udAU/1S/+YBpPbmr9L+0H5H+BnAVHSwDxlPGc"
JS_SIGNING_KEY = "Bhbpt6hqMZlSH4sJV7xiEEEiPVeTWz4Vkujl1EMdIPI"
JS_EVENT_CIPHERTEXT = "AwgAEnAkBmciEAyhh1j6DCk29UXJ7kv/kvayUNfuNT0iAioLxcXjFXOZ5ho3jF1/wrytlt0Lb298uMM67OxdVMi+/mMfYpwlvi07P9cIH6CMSj8tyhYoWl0SrKY6tkPf5GWOlRSRRKbziXa96FHXvnA3V2FCAIGtAe3G4ei5RPbhkmKAFBLAen33/D6MjJVqU8Ojr5vTkgls5eyirarlVpsmnH06alDaxO8avrU0NL+Vsw26xvlUQgEMOnUJ"
JS_OLD_SESSION_ID = "o+21hSjP+mgEmcfdslPsQdvzWnkdt0Wyo00Kp++R8Kc"
JS_OLD_BACKED_UP = {
    "first_message_index": 0,
    "forwarded_count": 0,
    "is_verified": False,
    "session_data": {
        "ciphertext": "2z2M7CZ+azAiTHN1oFzZ3smAFFt+LEOYY6h3QO3XXGdw6YpNn/gpHDO6I/rgj1zNd4FoTmzcQgvKdU8kN20u5BWRHxaHTZSlne5RxE6vUdREsBgZePglBNyG0AogR/PVdcrv/v18Y6rLM5O9SELmwbV63uV9Kuu/misMxoqbuqEdG7uujyaEKtjlQsJ5MGPQOySyw7XrnesSwF6XWRMxcPGRV0xZr3s9PI350Wve3EncjRgJ9IGFru1bcptMqfXgPZkOyGvrphHoFfoK7nY3xMEHUiaTRfRIjq8HNV4o8QY1qmWGnxNBQgOlL8MZlykjg3ULmQ3DtFfQPj/YYGS3jzxvC+EBjaafmsg+52CTeK3Rswu72PX450BnSZ1i3If4xWAUKvjTpeUg5aDLqttOv1pITolTJDw5W/SD+b5rjEKg1CFCHGEGE9wwV3NfQHVCQL+dfpd7Or0poy4dqKMAi3g0o3Tg7edIF8d5rREmxaALPyiie8PHD8mj/5Y0GLqrac4CD6+Mop7eUTzVovprjg",
        "mac": "5lxYBHQU80M",
        "ephemeral": "/Bn0A4UMFwJaDDvh0aEk1XZj3k1IfgCxgFY9P9a0b14",
    },
}
JS_OLD_EVENT_CIPHERTEXT = "AwgAEjD+VwXZ7PoGPRS/H4kwpAsMp/g+WPvJVtPEKE8fmM9IcT/NCiwPb8PehecDKP0cjm1XO88k6Bw3D17aGiBHr5iBoP7oSw8CXULXAMTkBlmkufRQq2+d0Giy1s4/Cg5n13jSVrSb2q7VTSv1ZHAFjUCsLSfR0gxqcQs"


# -- the recovery key -----------------------------------------------------------------


def test_a_recovery_key_decodes_whatever_its_spaces() -> None:
    assert decode_recovery_key(RUST_BASE58) == RUST_BYTES
    assert decode_recovery_key(JS_RECOVERY_KEY) == base64.b64decode(JS_BACKUP_KEY)


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ("EsTpRvZTnjck8YrhRAtwXLS84Nr2r9S9LGAWDaExVAPBvLRk", "typo"),  # last letter's case
        ("AATpRvZTnjck8YrhRAtwXLS84Nr2r9S9LGAWDaExVAPBvLRk", "does not start"),
        ("AATpRvZTnjck8YrhRAtwXLS84Nr2r9S9", "too short or too long"),
        ("AATpRvZTnjck8YrhRAtwXLS84Nr0OIl", "characters"),  # 0, O, I, l are not base58
        ("   ", "empty"),
    ],
)
def test_a_wrong_recovery_key_is_refused_saying_why_without_repeating_it(
    typed: str, said: str
) -> None:
    with pytest.raises(SecretStorageError) as caught:
        decode_recovery_key(typed)
    assert said in str(caught.value)
    assert typed.strip()[:8] not in str(caught.value) or not typed.strip()


# -- the secret storage key -----------------------------------------------------------


def test_the_recovery_key_of_a_published_description_opens_it() -> None:
    description = parse_key_description("bmur2d9ypPUH1msSwCxQOJkuKRmJI55e", RUST_KEY_INFO)
    assert len(unlock(RUST_KEY, description)) == 32


def test_the_passphrase_of_a_published_description_opens_it() -> None:
    description = parse_key_description("DZkbKc0RtKSq0z8V61w6KBmJCK6OCiIu", RUST_PASSPHRASE_INFO)
    assert len(unlock("It's a secret to everybody", description)) == 32
    with pytest.raises(WrongKey):
        unlock("It's a secret to nobody", description)


@pytest.mark.parametrize("typed", [RUST_BASE58, JS_RECOVERY_KEY])
def test_another_recovery_key_is_wrong(typed: str) -> None:
    description = parse_key_description("bmur2d9ypPUH1msSwCxQOJkuKRmJI55e", RUST_KEY_INFO)
    with pytest.raises(WrongKey):
        unlock(typed, description)


def test_a_passphrase_where_there_is_none_is_not_a_recovery_key() -> None:
    description = parse_key_description("k", RUST_KEY_INFO)
    with pytest.raises(SecretStorageError, match="not a recovery key") as caught:
        unlock("It's a secret to everybody", description)
    assert not isinstance(caught.value, WrongKey)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ({**RUST_KEY_INFO, "algorithm": "m.secret_storage.custom"}, "does not know"),
        ({**RUST_KEY_INFO, "iv": base64.b64encode(bytes(14)).decode()}, "wrong length"),
        ({**RUST_KEY_INFO, "mac": base64.b64encode(bytes(10)).decode()}, "wrong length"),
        ({**RUST_KEY_INFO, "mac": "not base64!"}, "not base64"),
        ("not an object", "invalid"),
    ],
)
def test_a_bad_description_is_refused(content: object, said: str) -> None:
    with pytest.raises(SecretStorageError, match=said):
        parse_key_description("k", content)


def test_without_iv_and_mac_any_key_is_taken_as_the_spec_says() -> None:
    description = parse_key_description("k", {"algorithm": SSSS})
    assert unlock(JS_RECOVERY_KEY, description) == base64.b64decode(JS_BACKUP_KEY)


def test_a_secret_decrypts_and_a_tampered_one_is_refused() -> None:
    key = decode_recovery_key(RUST_KEY)
    encrypted = encrypt_secret(key, "m.megolm_backup.v1", JS_BACKUP_KEY)
    assert decrypt_secret(key, "m.megolm_backup.v1", encrypted) == JS_BACKUP_KEY
    with pytest.raises(SecretStorageError, match="damaged"):  # the name is in the keys
        decrypt_secret(key, "m.cross_signing.master", encrypted)
    spoiled = base64.b64decode(encrypted["ciphertext"] + "==")
    spoiled = spoiled[:-1] + bytes([spoiled[-1] ^ 1])
    with pytest.raises(SecretStorageError, match="damaged"):
        decrypt_secret(
            key,
            "m.megolm_backup.v1",
            {**encrypted, "ciphertext": base64.b64encode(spoiled).decode()},
        )
    with pytest.raises(SecretStorageError, match="not stored"):
        decrypt_secret(key, "m.megolm_backup.v1", None)


# -- the key backup -------------------------------------------------------------------


def test_the_published_backed_up_session_opens_the_published_event() -> None:
    info = BackupInfo("1", JS_BACKUP_PUBLIC, 1)
    decryption = backup.open_backup(JS_BACKUP_KEY, info)
    session = backup.decrypt_session(decryption, "!room:id", JS_SESSION_ID, JS_BACKED_UP)
    assert (session.sender_key, session.signing_key) == (JS_SENDER_KEY, JS_SIGNING_KEY)
    clear = megolm_decrypt(session.session_key, JS_EVENT_CIPHERTEXT)
    assert clear["content"] == {"msgtype": "m.text", "body": "Hello world"}
    old = backup.decrypt_session(decryption, "!ROOM:ID", JS_OLD_SESSION_ID, JS_OLD_BACKED_UP)
    assert megolm_decrypt(old.session_key, JS_OLD_EVENT_CIPHERTEXT)["content"] == "testytest"


def test_a_backup_key_that_is_not_the_backups_is_refused() -> None:
    other = base64.b64encode(decode_recovery_key(RUST_KEY)).decode()
    with pytest.raises(SecretStorageError, match="does not open the current key backup"):
        backup.open_backup(other, BackupInfo("7", JS_BACKUP_PUBLIC, 0))


def test_a_whole_backup_answer_is_read_and_bad_entries_are_counted() -> None:
    decryption = backup.open_backup(JS_BACKUP_KEY, BackupInfo("1", JS_BACKUP_PUBLIC, 3))
    spoiled = {
        **JS_BACKED_UP,
        "session_data": {**JS_BACKED_UP["session_data"], "mac": "AAAAAAAAAAA"},
    }
    answer = {
        "rooms": {
            "!room:id": {"sessions": {JS_SESSION_ID: JS_BACKED_UP, "bad": spoiled}},
            "!ROOM:ID": {"sessions": {JS_OLD_SESSION_ID: JS_OLD_BACKED_UP, "x": "junk"}},
        }
    }
    sessions, failed = backup.decrypt_backup(decryption, answer)
    assert sorted(s.session_id for s in sessions) == sorted([JS_SESSION_ID, JS_OLD_SESSION_ID])
    assert failed == 2
    with pytest.raises(SecretStorageError):
        backup.decrypt_backup(decryption, {"nope": 1})


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (
            {"version": "1", "algorithm": "org.matrix.msc3270.v1.aes-hmac-sha2", "auth_data": {}},
            "does not know",
        ),
        ({"version": "1", "algorithm": backup.BACKUP_ALGORITHM, "auth_data": {}}, "no public key"),
        ({"algorithm": backup.BACKUP_ALGORITHM}, "invalid"),
    ],
)
def test_a_backup_version_passerelle_cannot_use_is_refused(answer: object, said: str) -> None:
    with pytest.raises(SecretStorageError, match=said):
        backup.parse_backup_info(answer)


def test_a_session_backed_up_decrypts_with_the_backup_key() -> None:
    session = BackedUpSession("!r:x", "sid", JS_SENDER_KEY, JS_SIGNING_KEY, "the key", ("k1",))
    data = backup.encrypt_session(JS_BACKUP_PUBLIC, session, 3, verified=True)
    assert (data["first_message_index"], data["forwarded_count"], data["is_verified"]) == (
        3,
        1,
        True,
    )
    # read back with vodozemac's decryptor directly, from the published private key
    private = vodozemac.Curve25519SecretKey.from_bytes(base64.b64decode(JS_BACKUP_KEY))
    sealed = data["session_data"]
    message = vodozemac.Message.from_base64(
        sealed["ciphertext"], sealed["mac"], sealed["ephemeral"]
    )
    clear = json.loads(vodozemac.PkDecryption.from_key(private).decrypt(message))
    assert clear == {
        "algorithm": "m.megolm.v1.aes-sha2",
        "sender_key": JS_SENDER_KEY,
        "sender_claimed_keys": {"ed25519": JS_SIGNING_KEY},
        "session_key": "the key",
        "forwarding_curve25519_key_chain": ["k1"],
    }


async def test_restored_sessions_go_into_nios_store_keeping_the_earlier_copy(
    tmp_path: Path,
) -> None:
    await load_nio()
    decryption = backup.open_backup(JS_BACKUP_KEY, BackupInfo("1", JS_BACKUP_PUBLIC, 1))
    session = backup.decrypt_session(decryption, "!room:id", JS_SESSION_ID, JS_BACKED_UP)
    olm, store = crypto._open_store("@alice:localhost", "DEVICE", tmp_path, "pickle key")
    try:
        # a copy held from a later message: the backup's (from message 0) replaces it
        full = nio.crypto.InboundGroupSession.import_session(
            session.session_key, JS_SIGNING_KEY, JS_SENDER_KEY, "!room:id"
        )
        later = nio.crypto.InboundGroupSession.import_session(
            full.export_session(1), JS_SIGNING_KEY, JS_SENDER_KEY, "!room:id"
        )
        assert olm.inbound_group_store.add(later)
        olm.save_inbound_group_session(later)
        bad = BackedUpSession("!room:id", "other", JS_SENDER_KEY, JS_SIGNING_KEY, "AAAA")
        taken, already, failed = backup.import_sessions(olm, [session, bad])
        assert (taken, already, failed) == ({JS_SESSION_ID}, 0, 1)
        # the same again: held as good already
        assert backup.import_sessions(olm, [session]) == (set(), 1, 0)
        stored = store.load_inbound_group_sessions()
        (held,) = [s for s in stored if s.id == JS_SESSION_ID]
        assert held.first_known_index == 0
    finally:
        store.database.close()


# -- cross-signing --------------------------------------------------------------------

# matrix-js-sdk, spec/test-utils/test-data/index.ts: alice's cross-signing keys, and the
# master key's signature on the self-signing key as /keys/query returns it.
JS_MASTER_SEED = "ZG95b3VzcGVha3doYWFhYWFhYWFhYWFhYWFhYWFhbGU"
JS_MASTER_PUBLIC = "J+5An10v1vzZpAXTYFokD1/PEVccFnLC61EfRXit0UY"
JS_SELF_SIGNING_SEED = "c2VsZnNlbGZzZWxmc2VsZnNlbGZzZWxmc2VsZnNlbGY"
JS_SELF_SIGNING_PUBLIC = "aU2+2CyXQTCuDcmWW0EL2bhJ6PdjFW2LbAsbHqf02AY"
JS_SELF_SIGNING_KEY = {
    "keys": {f"ed25519:{JS_SELF_SIGNING_PUBLIC}": JS_SELF_SIGNING_PUBLIC},
    "user_id": "@alice:localhost",
    "usage": ["self_signing"],
    "signatures": {
        "@alice:localhost": {
            f"ed25519:{JS_MASTER_PUBLIC}": "XfhYEhZmOs8BJdb3viatILBZ/bElsHXEW28V4tIaY5CxrBR0YOym3yZHWmRmypXessHZAKOhZn3yBMXzdajyCw"
        }
    },
}


def test_published_cross_signing_seeds_give_their_public_keys() -> None:
    assert crosssign.public_key(crosssign.signing_key(JS_MASTER_SEED)) == JS_MASTER_PUBLIC
    assert (
        crosssign.public_key(crosssign.signing_key(JS_SELF_SIGNING_SEED)) == JS_SELF_SIGNING_PUBLIC
    )


def test_a_json_object_is_signed_as_matrix_signs_it() -> None:
    # ed25519 is deterministic: the published signature, whatever "signatures" and
    # "unsigned" hold, and the order the keys come in.
    master = crosssign.signing_key(JS_MASTER_SEED)
    (expected,) = JS_SELF_SIGNING_KEY["signatures"]["@alice:localhost"].values()  # type: ignore[index]
    shuffled = dict(reversed(list(JS_SELF_SIGNING_KEY.items())))
    assert crosssign.sign_json(master, {**shuffled, "unsigned": {"x": 1}}) == expected


@pytest.mark.parametrize(
    ("value", "canonical"),
    [  # the spec's examples (Appendices, Canonical JSON)
        ({}, b"{}"),
        ({"one": 1, "two": "Two"}, b'{"one":1,"two":"Two"}'),
        ({"b": "2", "a": "1"}, b'{"a":"1","b":"2"}'),
        (
            {"auth": {"success": True, "mxid": "@john.doe:example.com"}},
            b'{"auth":{"mxid":"@john.doe:example.com","success":true}}',
        ),
        ({"a": "日本語"}, '{"a":"日本語"}'.encode()),
        ({"a": None}, b'{"a":null}'),
    ],
)
def test_canonical_json(value: object, canonical: bytes) -> None:
    assert crosssign.canonical_json(value) == canonical


@pytest.mark.parametrize("seed", ["c2VsZg", "not base64!", ""])
def test_a_damaged_seed_is_refused(seed: str) -> None:
    with pytest.raises(SecretStorageError):
        crosssign.signing_key(seed)


def test_a_published_signature_verifies_and_a_changed_object_does_not() -> None:
    (signature,) = JS_SELF_SIGNING_KEY["signatures"]["@alice:localhost"].values()  # type: ignore[index]
    assert crosssign.verify_json(JS_MASTER_PUBLIC, JS_SELF_SIGNING_KEY, signature)
    changed = {**JS_SELF_SIGNING_KEY, "usage": ["user_signing"]}
    assert not crosssign.verify_json(JS_MASTER_PUBLIC, changed, signature)
    assert not crosssign.verify_json(JS_SELF_SIGNING_PUBLIC, JS_SELF_SIGNING_KEY, signature)
    assert not crosssign.verify_json(JS_MASTER_PUBLIC, JS_SELF_SIGNING_KEY, "not base64!")


def test_only_devices_the_self_signing_key_signed_are_listed() -> None:
    me, ssk = "@alice:localhost", crosssign.signing_key(JS_SELF_SIGNING_SEED)

    def device(device_id: str, signer: Any = None) -> dict[str, Any]:
        keys = {
            "user_id": me,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"ed25519:{device_id}": f"ed-{device_id}"},
        }
        if signer is not None:
            public = crosssign.public_key(signer)
            keys["signatures"] = {me: {f"ed25519:{public}": crosssign.sign_json(signer, keys)}}
        return keys

    master = crosssign.signing_key(JS_MASTER_SEED)
    answer = {
        "device_keys": {
            me: {
                "SIGNED": device("SIGNED", ssk),
                "UNSIGNED": device("UNSIGNED"),
                "BY_MASTER": device("BY_MASTER", master),
                "ALTERED": {**device("ALTERED", ssk), "keys": {"ed25519:ALTERED": "other"}},
                "OTHER_ID": {**device("OTHER_ID", ssk), "device_id": "ELSEWHERE"},
            }
        }
    }
    assert crosssign.signed_devices(answer, me, JS_SELF_SIGNING_PUBLIC) == {"SIGNED": "ed-SIGNED"}
    assert crosssign.signed_devices({"device_keys": "junk"}, me, JS_SELF_SIGNING_PUBLIC) == {}
