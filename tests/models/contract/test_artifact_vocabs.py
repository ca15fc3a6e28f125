"""Vocabularies in an artifact: binary ``vocabs.npz`` next to ``encoder.json``."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from models.contract.encoder_files import decode_encoder, encoder_files
from models.contract.feature_spec import FeatureSpec
from models.contract.features import FeatureEncoder
from models.contract.manifest import ENCODER_FILE, VOCABS_FILE, ArtifactError

I64 = np.iinfo(np.int64)


def _encoder(ids: np.ndarray, words: list[str]) -> FeatureEncoder:
    specs = [
        FeatureSpec("item_id", "categorical", "item"),
        FeatureSpec("device", "categorical", "context"),
        FeatureSpec("shop", "categorical", "item", encoding="hash", buckets=50),
        FeatureSpec("price", "numeric", "item", transform="standardize"),
    ]
    columns = {
        "item_id": ids,
        "device": np.array(words, dtype=object),
        "shop": np.arange(len(ids)),
        "price": np.linspace(1.0, 9.0, len(ids)),
    }
    return FeatureEncoder(specs).fit(columns)


@pytest.mark.parametrize(
    "ids",
    [
        np.array([5, 3, 900, 3, 10**12]),  # small and 40-bit gaps
        np.array([I64.min, -1, 0, I64.max]),  # gaps that need the full uint64 range
        np.array([42]),  # a single key: no gaps
    ],
)
def test_binary_vocabularies_round_trip_and_encode_like_the_original(ids):
    words = ["ios", "web", "android", "ios", "web"][: len(ids)]
    encoder = _encoder(ids, words)
    files = encoder_files(encoder)
    assert set(files) == {ENCODER_FILE, VOCABS_FILE}
    assert b"keys" not in files[ENCODER_FILE]  # no key is left in the JSON text
    loaded = decode_encoder(files[ENCODER_FILE], files[VOCABS_FILE])
    assert loaded.spec_hash() == encoder.spec_hash()
    for name in ("item_id", "device"):
        assert np.array_equal(loaded.vocabs[name].keys, encoder.vocabs[name].keys)
        assert loaded.vocabs[name].is_int == encoder.vocabs[name].is_int
    probe = {
        "item_id": np.array([*ids.tolist(), 7]),
        "device": np.array([*words, "tv"], dtype=object),
        "shop": np.arange(len(ids) + 1),
        "price": np.arange(len(ids) + 1, dtype=np.float64),
    }
    got, want = loaded.transform(probe), encoder.transform(probe)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    with np.load(io.BytesIO(files[VOCABS_FILE]), allow_pickle=False) as npz:
        assert npz["item_id.deltas"].dtype.kind == "u"  # narrowest unsigned gap type


def test_gaps_use_the_narrowest_unsigned_type():
    files = encoder_files(_encoder(np.arange(0, 1000, 3), ["ios"] * 334))
    with np.load(io.BytesIO(files[VOCABS_FILE]), allow_pickle=False) as npz:
        assert npz["item_id.deltas"].dtype == np.uint8
        assert npz["item_id.first"].tolist() == [0]


def test_encoder_without_vocabularies_writes_no_npz():
    spec = FeatureSpec("price", "numeric", "item", transform="standardize")
    encoder = FeatureEncoder([spec]).fit({"price": np.arange(5.0)})
    files = encoder_files(encoder)
    assert set(files) == {ENCODER_FILE}
    assert decode_encoder(files[ENCODER_FILE], None).stats == encoder.stats


def test_inline_keys_of_earlier_artifacts_still_load():
    encoder = _encoder(np.array([1, 2, 3]), ["ios", "web", "ios"])
    legacy = json.dumps(encoder.state()).encode()
    loaded = decode_encoder(legacy, None)
    assert np.array_equal(loaded.vocabs["item_id"].keys, [1, 2, 3])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda st, arr: arr.clear(), r"no array"),
        (lambda st, arr: st["vocabs"]["item_id"].update(size=99), r"holds 3 keys"),
        (lambda st, arr: arr.update({"item_id.deltas": np.array([0, 1], np.uint8)}), "positive"),
        (lambda st, arr: arr.update({"item_id.first": np.array([1.5])}), "int64"),
        (lambda st, arr: st["vocabs"]["item_id"].update(file="x.npz"), "no known keys file"),
    ],
)
def test_malformed_vocabularies_are_refused_with_a_clear_error(mutate, message):
    files = encoder_files(_encoder(np.array([1, 2, 3]), ["ios", "web", "ios"]))
    state = json.loads(files[ENCODER_FILE])
    with np.load(io.BytesIO(files[VOCABS_FILE]), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    mutate(state, arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(ArtifactError, match=message):
        decode_encoder(json.dumps(state).encode(), buffer.getvalue())


def test_missing_npz_and_pickled_arrays_are_refused():
    files = encoder_files(_encoder(np.array([1, 2, 3]), ["ios", "web", "ios"]))
    with pytest.raises(ArtifactError, match=r"vocabs\.npz, which is missing"):
        decode_encoder(files[ENCODER_FILE], None)
    buffer = io.BytesIO()
    np.savez(buffer, **{"item_id.first": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(ArtifactError, match=r"not a plain \.npz"):
        decode_encoder(files[ENCODER_FILE], buffer.getvalue())
    with pytest.raises(ArtifactError, match=r"not a plain \.npz"):
        decode_encoder(files[ENCODER_FILE], b"not a zip")
