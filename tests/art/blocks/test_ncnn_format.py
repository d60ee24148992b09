"""The ncnn reader: .param text, .bin blobs, and the PyTorch executor against the ncnn runtime."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from atelier.art.errors import ModelError
from atelier.art.blocks.ncnn_format import (
    TAG_FP16,
    NcnnNet,
    WeightReader,
    load_ncnn,
    parse_param,
    read_param,
    read_weights,
)

WAIFU2X = ("waifu2x", "models-upconv_7_photo")


# A small graph that uses every layer type and option the executor supports, including the
# ones waifu2x does not (asymmetric padding, non-square kernels, coefficients, max pooling).
# As in any ncnn graph, a blob read twice goes through a Split (ncnn crashes otherwise).
SYNTHETIC_PARAM = """7767517
19 24
Input            in   0 1 data 0=22 1=20 2=3
Convolution      c1   1 1 data c1 0=8 1=3 11=5 4=1 15=2 14=2 16=0 5=1 6=360 9=2 -23310=1,0.2
Split            s1   1 3 c1 a b c
Deconvolution    d1   1 1 a d1 0=4 1=3 3=2 4=1 5=1 6=288 9=1
Convolution      c2   1 1 d1 c2 0=8 1=3 3=2 5=1 6=288
Split            s4   1 2 c2 c2a c2b
Crop             cr   2 1 b c2a cr 0=1 1=1
Eltwise          e1   2 1 cr c2b e1 0=1 -23301=2,0.5,-1.5
Split            s2   1 2 e1 e1a e1b
Pooling          p1   1 1 e1a p1 0=1 4=1
InnerProduct     fc   1 1 p1 fc 0=8 1=1 2=64 9=4
Scale            sc   2 1 e1b fc sc 0=-233
ReLU             r1   1 1 sc r1 0=0.1
Pooling          p2   1 1 c pmax 0=0 4=1
InnerProduct     fc2  1 1 pmax fc2 0=8 1=0 2=64
Sigmoid          sg   1 1 fc2 sg
Split            s3   1 2 r1 r1a r1b
Scale            sc2  2 1 r1a sg scl 0=-233
Eltwise          mx   2 1 r1b scl out 0=2
"""


def _synthetic_bin(rng: np.random.Generator) -> bytes:
    def fp16(count: int) -> bytes:
        values = rng.normal(0, 0.3, count).astype("<f2").tobytes()
        return struct.pack("<I", TAG_FP16) + values + b"\0" * (-len(values) % 4)

    def fp32_tagged(count: int) -> bytes:
        return struct.pack("<I", 0) + rng.normal(0, 0.3, count).astype("<f4").tobytes()

    def raw(count: int) -> bytes:
        return rng.normal(0, 0.1, count).astype("<f4").tobytes()

    return b"".join(
        [
            fp16(360), raw(8),  # c1
            fp32_tagged(288), raw(4),  # d1 (fp32 weights, tag 0)
            fp16(288), raw(8),  # c2
            fp16(64), raw(8),  # fc
            fp32_tagged(64),  # fc2, no bias
        ]
    )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ncnn")
    param, weights = folder / "net.param", folder / "net.bin"
    param.write_text(SYNTHETIC_PARAM)
    weights.write_bytes(_synthetic_bin(np.random.default_rng(7)))
    return param, weights


def _ncnn_forward(param: Path, weights: Path, x: np.ndarray, output: str) -> np.ndarray:
    ncnn = pytest.importorskip("ncnn")
    net = ncnn.Net()
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_arithmetic = False
    net.load_param(str(param))
    net.load_model(str(weights))
    array = np.ascontiguousarray(x, dtype=np.float32)  # ncnn.Mat borrows it: keep it alive
    mat = ncnn.Mat(array)
    extractor = net.create_extractor()
    extractor.input("data" if "data" in param.read_text() else "Input1", mat)
    ret, out = extractor.extract(output)
    assert ret == 0
    result = np.array(out).copy()
    del mat, array
    return result


def test_param_lines_are_parsed_into_types_blobs_and_typed_values(models_dir: Path) -> None:
    layers = read_param(models_dir / "waifu2x" / "models-cunet" / "scale2.0x_model.param")
    assert len(layers) == 59
    assert {layer.type for layer in layers} == {
        "Input", "Convolution", "Deconvolution", "Split", "Pooling", "InnerProduct", "Scale", "Crop", "Eltwise",
    }
    conv = layers[1]
    assert (conv.type, conv.name, conv.inputs, conv.outputs) == (
        "Convolution", "Convolution1", ("Input1",), ("Convolution1_ReLU1",)
    )
    assert conv.params[0] == 32 and isinstance(conv.params[0], int)
    assert conv.params[10] == pytest.approx((0.1,))  # -23310=1,0.100000 is array id 10
    assert layers[-1].outputs == ("Eltwise4",)


def test_a_value_with_a_dot_or_an_exponent_is_a_float_like_in_ncnn() -> None:
    (layer,) = parse_param("7767517\n1 1\nReLU r 0 1 x 0=1 1=1.0 2=1e-3 3=-2 -23304=3,1,2.5,3\n")
    assert layer.params[0] == 1 and isinstance(layer.params[0], int)
    assert isinstance(layer.params[1], float) and layer.params[2] == pytest.approx(1e-3)
    assert layer.params[3] == -2
    assert layer.params[4] == (1, 2.5, 3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("7767518\n1 1\nInput in 0 1 x\n", "magic"),
        ("7767517\n2 1\nInput in 0 1 x\n", "declares 2 layers"),
        ("7767517\n1 2\nInput in 0 1 x\n", "declares 2 blobs"),
        ("7767517\n1 1\nInput in 0 2 x\n", "line 3"),
        ("7767517\n1 1\nInput in 0 1 x -23300=3,1\n", "line 3"),
    ],
)
def test_a_malformed_param_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        parse_param(text)


def test_fp16_blobs_are_padded_to_four_bytes_and_widened() -> None:
    values = np.array([0.5, -1.25, 3.0], dtype="<f2")
    data = struct.pack("<I", TAG_FP16) + values.tobytes() + b"\0\0" + np.float32(7).tobytes()
    reader = WeightReader(data)
    np.testing.assert_array_equal(reader.auto(3), [0.5, -1.25, 3.0])
    np.testing.assert_array_equal(reader.raw(1), [7.0])
    assert reader.remaining == 0


def test_codebook_quantised_blobs_are_looked_up() -> None:
    table = np.linspace(-1, 1, 256, dtype="<f4")
    indices = np.array([0, 255, 128], dtype=np.uint8)
    data = struct.pack("<I", 0x01010101) + table.tobytes() + indices.tobytes() + b"\0"
    np.testing.assert_allclose(WeightReader(data).auto(3), table[[0, 255, 128]])


def test_the_waifu2x_bin_is_consumed_to_the_last_byte(models_dir: Path) -> None:
    folder = models_dir.joinpath(*WAIFU2X)
    layers = read_param(folder / "scale2.0x_model.param")
    weights = read_weights(layers, (folder / "scale2.0x_model.bin").read_bytes())
    assert weights["conv1_layer"]["weight"].shape == (432,)
    assert weights["conv7_layer"]["bias"].shape == (3,)
    assert all(np.isfinite(blob).all() for blobs in weights.values() for blob in blobs.values())


def test_a_param_and_bin_that_do_not_belong_together_are_refused(models_dir: Path) -> None:
    root = models_dir / "waifu2x"
    upconv = root / "models-upconv_7_photo" / "scale2.0x_model.param"
    with pytest.raises(ModelError, match="too short|more than"):
        load_ncnn(upconv, root / "models-cunet" / "scale2.0x_model.bin")
    truncated = (root / "models-upconv_7_photo" / "scale2.0x_model.bin").read_bytes()[:-4]
    with pytest.raises(ModelError, match="too short"):
        read_weights(read_param(upconv), truncated)


def test_unsupported_layers_are_refused_not_guessed() -> None:
    layers = parse_param("7767517\n2 2\nInput in 0 1 x\nLSTM l 1 1 x y 0=4\n")
    with pytest.raises(ModelError, match="LSTM"):
        read_weights(layers, b"")
    layers = parse_param("7767517\n2 2\nInput in 0 1 x\nPooling p 1 1 x y 0=0 1=2 2=2\n")
    with pytest.raises(ModelError, match="global pooling"):
        NcnnNet(layers, {})


def test_the_executor_matches_the_ncnn_runtime_on_every_supported_layer(synthetic: tuple[Path, Path]) -> None:
    param, weights = synthetic
    net = load_ncnn(param, weights)
    x = torch.rand(1, 3, 20, 22, generator=torch.Generator().manual_seed(0))
    ours = net(x)[0].numpy()
    theirs = _ncnn_forward(param, weights, x[0].numpy(), "out")
    assert ours.shape == theirs.shape == (8, 17, 22)
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)


def test_the_executor_runs_a_batch_like_single_images(synthetic: tuple[Path, Path]) -> None:
    net = load_ncnn(*synthetic)
    x = torch.rand(2, 3, 20, 22, generator=torch.Generator().manual_seed(1))
    batch = net(x)
    torch.testing.assert_close(batch[1:], net(x[1:]), atol=1e-5, rtol=1e-5)


def test_geometry_is_measured_from_the_graph(models_dir: Path) -> None:
    folder = models_dir.joinpath(*WAIFU2X)
    net = load_ncnn(folder / "scale2.0x_model.param", folder / "scale2.0x_model.bin")
    assert net.geometry() == (2, 14, 1)  # 2x, loses 7 input px (14 output px) per side, any size


@pytest.mark.parametrize(
    "kernel, stride, lo, hi",
    [(4, 2, 3, 3), (2, 2, 0, 0), (3, 2, 1, 1), (5, 3, 2, 0), (3, 1, 1, 1), (1, 2, 0, 0), (4, 2, 0, 1), (6, 2, 5, 4)],
)
def test_transposed_convolutions_equal_pytorchs_for_any_kernel_stride_and_crop(
    kernel: int, stride: int, lo: int, hi: int
) -> None:
    # Deconvolutions run as sub-pixel convolutions (faster on CPU); they must be the same maths.
    cin, cout = 5, 3
    text = (
        "7767517\n2 2\nInput in 0 1 x 0=9 1=7 2=5\n"
        f"Deconvolution d 1 1 x y 0={cout} 1={kernel} 3={stride} 4={lo} 15={hi} 14={lo} 16={hi} "
        f"5=1 6={cin * cout * kernel * kernel}\n"
    )
    rng = np.random.default_rng(kernel * 10 + stride)
    weight = rng.normal(0, 1, (cout, cin, kernel, kernel)).astype(np.float32)
    bias = rng.normal(0, 1, cout).astype(np.float32)
    net = NcnnNet(parse_param(text), {"d": {"weight": weight.ravel(), "bias": bias}})
    x = torch.rand(2, cin, 7, 9, generator=torch.Generator().manual_seed(kernel))
    full = torch.nn.functional.conv_transpose2d(x, torch.from_numpy(weight).transpose(0, 1), torch.from_numpy(bias), stride=stride)
    expected = full[..., lo : full.shape[-2] - hi, lo : full.shape[-1] - hi]
    out = net(x)
    assert out.shape == expected.shape
    assert net.output_size(7, 9) == tuple(expected.shape[-2:])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
