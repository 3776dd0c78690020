"""Specification of kquant.gguf.anatomy: a byte-by-byte GGUF reader that agrees with gguf-py's GGUFReader.

It must find every metadata pair, tensor info and data offset exactly where GGUFReader
does, on the bundled model and on a small file written here with GGUFWriter (which has
every value type, an array of arrays, and a non-default alignment); and truncated or
corrupt bytes must give one KQuantError line, never a struct.error or an IndexError.
"""

import struct

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

from kquant.errors import KQuantError
from kquant.gguf import anatomy as A
from kquant.model import hub


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A GGUF written by gguf-py: every value type, alignment 64, three tensors of three types."""
    path = tmp_path_factory.mktemp("anatomy") / "tiny.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -3000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 0.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ☃")
    w.add_uint64("t.u64", 2**63 + 1)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 1e-300)
    w.add_array("t.arr", [1, 2, 3])
    w.add_array("t.strs", ["a", "bc", ""])
    w.add_array("t.nested", [[1, 2], [3]])
    w.add_tensor("a.weight", np.arange(96, dtype=np.float32).reshape(3, 32))
    w.add_tensor("b.weight", np.ones((2, 64), np.float16))
    q8 = np.zeros((4, 2 * 34), np.uint8)  # 4 rows of 64 weights in Q8_0: two 34-byte blocks per row
    w.add_tensor("c.weight", q8, raw_shape=q8.shape, raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _agrees_with_gguf_reader(path):
    buf = path.read_bytes()
    layout, reader = A.read_layout(buf), GGUFReader(path)
    fields = list(reader.fields.values())[3:]  # GGUFReader lists the header's three values first
    assert [kv.key for kv in layout.kvs] == [f.name for f in fields]
    for kv, f in zip(layout.kvs, fields):
        assert (kv.start, kv.type) == (f.offset, f.types[0])
        assert kv.item_type == (f.types[1] if kv.type == GGUFValueType.ARRAY else None)
        if kv.type == GGUFValueType.ARRAY and kv.item_type == GGUFValueType.ARRAY:
            continue  # gguf-py's contents() does not unpack arrays of arrays
        assert kv.value == f.contents(), kv.key
    assert (layout.alignment, layout.data_start) == (reader.alignment, reader.data_offset)
    assert [t.name for t in layout.tensors] == [t.name for t in reader.tensors]
    for info, t in zip(layout.tensors, reader.tensors):
        assert info.start == t.field.offset
        assert info.ne == tuple(int(n) for n in t.shape)
        assert info.type == t.tensor_type
        assert (layout.data_start + info.offset, info.nbytes) == (t.data_offset, t.n_bytes)
        assert layout.data_range(info.name) == (t.data_offset, t.data_offset + t.n_bytes)
    return layout


def test_agrees_with_gguf_reader_on_every_value_type_and_a_64_byte_alignment(tiny):
    layout = _agrees_with_gguf_reader(tiny)
    assert layout.alignment == 64 and layout.data_start % 64 == 0
    assert layout.value("t.nested") == [[1, 2], [3]]
    assert layout.value("t.u64") == 2**63 + 1 and layout.value("t.str") == "héllo ☃"
    assert [t.type.name for t in layout.tensors] == ["F32", "F16", "Q8_0"]


def test_agrees_with_gguf_reader_on_the_bundled_model():
    layout = _agrees_with_gguf_reader(hub.bundled())
    assert layout.header.magic == b"GGUF" and layout.header.version == 3
    assert layout.alignment == 32 and layout.value("general.alignment") is None  # the default


def test_header_is_magic_version_and_two_64_bit_counts():
    raw = b"GGUF" + struct.pack("<IQQ", 3, 7, 9)
    assert A.parse_header(raw) == A.Header(b"GGUF", 3, 7, 9)


def test_each_tensor_info_record_is_exactly_what_encode_tensor_info_writes(tiny):
    buf = tiny.read_bytes()
    for t in A.read_layout(buf).tensors:
        assert buf[t.start : t.end] == A.encode_tensor_info(t.name, t.ne, t.type, t.offset)
        assert t.fields()[-1][2] == t.end - t.start  # the drawn fields cover the record


def test_align_rounds_up_to_the_next_multiple_only_when_needed():
    assert [A.align(n, 32) for n in (0, 1, 31, 32, 33)] == [0, 32, 32, 32, 64]


def test_tensor_bytes_count_whole_blocks():
    assert A.tensor_nbytes((256, 10), "Q4_K") == 10 * 144
    assert A.tensor_nbytes((256, 10), GGMLQuantizationType.F16) == 256 * 10 * 2
    with pytest.raises(KQuantError, match="not a whole number of Q4_K blocks"):
        A.tensor_nbytes((100, 2), "Q4_K")


def _one_line_error(buf, match):
    with pytest.raises(KQuantError, match=match) as e:
        A.read_layout(buf)
    assert "\n" not in str(e.value)


def test_every_truncation_of_the_file_is_one_clear_error(tiny):
    buf = tiny.read_bytes()
    layout = A.read_layout(buf)
    cuts = list(range(0, layout.tensors[-1].end + 1, 7)) + [layout.data_range(layout.tensors[-1].name)[1] - 1]
    for n in cuts:
        _one_line_error(buf[:n], "truncated GGUF")


def test_corrupt_bytes_are_one_clear_error(tiny):
    buf = bytearray(tiny.read_bytes())
    layout = A.read_layout(bytes(buf))
    _one_line_error(b"GGML" + bytes(buf[4:]), "not a GGUF file")
    _one_line_error(bytes(buf[:4]) + struct.pack(">I", 3) + bytes(buf[8:]), "big-endian")
    _one_line_error(bytes(buf[:4]) + struct.pack("<I", 1) + bytes(buf[8:]), "version 1 is not supported")
    first = layout.kvs[0]
    bad_type = buf.copy()
    bad_type[first.type_at : first.type_at + 4] = struct.pack("<I", 99)
    _one_line_error(bytes(bad_type), "value type 99")
    t = layout.tensors[0]
    n_dims_at = t.start + t.fields()[2][1]
    bad_dims = buf.copy()
    bad_dims[n_dims_at : n_dims_at + 4] = struct.pack("<I", 9)
    _one_line_error(bytes(bad_dims), "n_dims 9")
    type_at = t.start + t.fields()[4][1]
    bad_ttype = buf.copy()
    bad_ttype[type_at : type_at + 4] = struct.pack("<I", 4)  # 4 and 5 were Q4_2 and Q4_3, removed from ggml
    _one_line_error(bytes(bad_ttype), "no ggml type")
    offset_at = t.start + t.fields()[5][1]
    bad_offset = buf.copy()
    bad_offset[offset_at : offset_at + 8] = struct.pack("<Q", 3)
    _one_line_error(bytes(bad_offset), "not a multiple of the alignment 64")
