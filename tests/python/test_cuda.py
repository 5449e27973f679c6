"""The Python API with tensors in CUDA memory (DLPack): torch CUDA tensors in, torch CUDA tensors
out, on the caller's current stream, matching the same session's runs on host arrays. Needs a GPU
and torch with CUDA; elsewhere the module is skipped (docs/gpu-tests.md records its runs)."""

import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln

torch = pytest.importorskip("torch")
if not (kiln.cuda_available() and torch.cuda.is_available()):
    pytest.skip("needs a CUDA GPU (kiln.cuda_available() and torch.cuda.is_available())", allow_module_level=True)


def two_input_model():
    """x [batch, 64] @ w [64, 32] + bias, then y = Relu(.) * g (g [batch, 32]) and z = Tanh(.)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["s"]),
        helper.make_node("Relu", ["s"], ["r"]),
        helper.make_node("Mul", ["r", "g"], ["y"]),
        helper.make_node("Tanh", ["s"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64]),
            helper.make_tensor_value_info("g", TensorProto.FLOAT, ["batch", 32]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 32]),
        ],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.fixture(scope="module")
def engine():
    profile = ((1, 64), (8, 64), (16, 64))
    gprofile = ((1, 32), (8, 32), (16, 32))
    return kiln.build(two_input_model(), device="cuda", profiles={"x": profile, "g": gprofile}, progress=False)


def host_run(session, x, g):
    return session.run({"x": x.cpu().numpy(), "g": g.cpu().numpy()})


def inputs(batch, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(batch, 64, device="cuda", generator=gen)
    g = torch.rand(batch, 32, device="cuda", generator=gen)
    return x, g


def test_torch_tensors_in_and_out(engine):
    session = engine.session()
    for batch in (1, 8, 16, 8):
        x, g = inputs(batch, batch)
        got = session.run({"x": x, "g": g})
        want = host_run(session, x, g)
        for name in ("y", "z"):
            t = got[name]
            assert isinstance(t, torch.Tensor) and t.is_cuda and t.dtype == torch.float32
            assert tuple(t.shape) == (batch, 32)
            np.testing.assert_array_equal(t.cpu().numpy(), want[name])  # the same kernels


def test_onnxruntime_form_and_output_selection(engine):
    session = engine.session()
    x, g = inputs(4, 1)
    (z,) = session.run(["z"], {"x": x, "g": g})
    np.testing.assert_array_equal(z.cpu().numpy(), host_run(session, x, g)["z"])
    only = session.run({"x": x, "g": g}, outputs=["y"])
    assert list(only) == ["y"] and only["y"].is_cuda


def test_runs_queued_on_a_side_stream_each_see_their_inputs(engine):
    session = engine.session()
    side = torch.cuda.Stream()
    cases = [inputs(b, 100 + k) for k, b in enumerate((2, 2, 2, 16, 16, 3, 3, 3))]
    torch.cuda.synchronize()
    results = []
    with torch.cuda.stream(side):
        for x, g in cases:
            # Inputs made on the side stream too: the run must wait for them, not the host.
            x2 = (x * 2).contiguous()
            results.append((x2, g, session.run({"x": x2, "g": g})))
    side.synchronize()
    for x2, g, got in results:
        want = host_run(session, x2, g)
        np.testing.assert_array_equal(got["y"].cpu().numpy(), want["y"])
        np.testing.assert_array_equal(got["z"].cpu().numpy(), want["z"])


def test_an_explicit_stream_handle(engine):
    session = engine.session()
    s = torch.cuda.Stream()
    x, g = inputs(5, 9)
    torch.cuda.synchronize()
    got = session.run({"x": x, "g": g}, stream=s)
    s.synchronize()
    np.testing.assert_array_equal(got["z"].cpu().numpy(), host_run(session, x, g)["z"])
    got = session.run({"x": x, "g": g}, stream=s.cuda_stream)
    s.synchronize()
    np.testing.assert_array_equal(got["y"].cpu().numpy(), host_run(session, x, g)["y"])


def test_device_input_errors(engine):
    session = engine.session()
    x, g = inputs(4, 2)
    with pytest.raises(kiln.InvalidInput, match="not C-contiguous"):
        session.run({"x": torch.randn(64, 4, device="cuda").t(), "g": g})
    with pytest.raises(kiln.InvalidInput, match="the model takes float, got double"):
        session.run({"x": x.double(), "g": g})
    with pytest.raises(kiln.InvalidInput, match="all inputs of a run"):
        session.run({"x": x, "g": g.cpu().numpy()})
    with pytest.raises(kiln.InvalidInput, match="outside the engine's profile"):
        session.run({"x": torch.zeros(17, 64, device="cuda"), "g": torch.zeros(17, 32, device="cuda")})
    with pytest.raises(kiln.InvalidInput, match="unknown output"):
        session.run({"x": x, "g": g}, outputs=["nope"])
    # The session still runs after each error.
    got = session.run({"x": x, "g": g})
    np.testing.assert_array_equal(got["z"].cpu().numpy(), host_run(session, x, g)["z"])


def test_outputs_outlive_the_session_and_later_runs(engine):
    session = engine.session()
    x, g = inputs(8, 3)
    first = session.run({"x": x, "g": g})["z"]
    want = first.cpu().numpy().copy()
    for k in range(5):
        session.run({"x": inputs(8, 50 + k)[0], "g": g})
    del session
    torch.cuda.synchronize()
    np.testing.assert_array_equal(first.cpu().numpy(), want)


def test_sessions_on_several_threads(engine):
    errors = []

    def work(seed):
        try:
            session = engine.session()
            stream = torch.cuda.Stream()
            with torch.cuda.stream(stream):
                for k in range(20):
                    x, g = inputs(1 + (seed + k) % 16, seed * 100 + k)
                    got = session.run({"x": x, "g": g})
                    stream.synchronize()
                    want = host_run(session, x, g)
                    if not np.array_equal(got["y"].cpu().numpy(), want["y"]):
                        errors.append(f"thread {seed} run {k}")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_cupy_arrays_in_and_out(engine):
    cupy = pytest.importorskip("cupy")
    session = engine.session()
    x = cupy.asarray(np.random.default_rng(4).standard_normal((3, 64)).astype(np.float32))
    g = cupy.ones((3, 32), dtype=cupy.float32)
    got = session.run({"x": x, "g": g})
    assert isinstance(got["y"], cupy.ndarray)
    want = session.run({"x": cupy.asnumpy(x), "g": cupy.asnumpy(g)})
    np.testing.assert_array_equal(cupy.asnumpy(got["y"]), want["y"])


def test_any_dlpack_producer(engine):
    class Producer:  # only the DLPack protocol of a torch CUDA tensor
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, **kwargs):
            return self.t.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

    session = engine.session()
    x, g = inputs(6, 11)
    torch.cuda.synchronize()
    got = session.run({"x": Producer(x), "g": Producer(g)})
    assert got["y"].__dlpack_device__()[0] == 2  # kDLCUDA: a DLPack array on the GPU
    y = torch.from_dlpack(got["y"])
    torch.cuda.synchronize()
    assert y.is_cuda and tuple(y.shape) == (6, 32)
    np.testing.assert_array_equal(y.cpu().numpy(), host_run(session, x, g)["y"])
