"""The Python API (python/kiln) against onnxruntime and its own contract: builds from a path, bytes
or a ModelProto, engines saved and loaded, both run forms, every NumPy element type Kiln takes,
every error case, and sessions on several threads."""

import os
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import kiln


def mlp_model(batch="batch"):
    """x [batch, 4] -> MatMul [4, 3] -> Add -> Relu -> y [batch, 3], and z = Sigmoid of the sum."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
        helper.make_node("Sigmoid", ["s"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch, 3]),
        ],
        [w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def identity_model(elem_type, shape=(2, 3)):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", elem_type, list(shape))],
        [helper.make_tensor_value_info("y", elem_type, list(shape))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "mlp.onnx"
    onnx.save(mlp_model(), str(path))
    return str(path)


@pytest.fixture(scope="module")
def engine(model_path):
    return kiln.build(model_path, device="cpu", profiles={"x": ((1, 4), (4, 4), (8, 4))}, progress=False)


def reference(model_path, x):
    return ort.InferenceSession(model_path, providers=["CPUExecutionProvider"]).run(None, {"x": x})


# ---- building, saving, loading --------------------------------------------------------------


def test_builds_from_a_path_bytes_and_a_model_proto(model_path):
    x = np.random.default_rng(1).standard_normal((1, 4)).astype(np.float32)
    want = reference(model_path, x)
    proto = mlp_model()
    for source in (model_path, open(model_path, "rb").read(), proto):
        e = kiln.build(source, device="cpu", shapes={"x": (1, 4)}, progress=False)
        got = e.session().run({"x": x})
        assert list(got) == ["y", "z"]
        np.testing.assert_allclose(got["y"], want[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["z"], want[1], rtol=1e-5, atol=1e-6)


def test_engine_describes_its_inputs_and_outputs(engine):
    (x,) = engine.inputs
    assert x.name == "x" and x.dtype is np.float32
    assert x.shape == ("batch", 4)  # the batch varies within the profile: its symbol
    assert [o.name for o in engine.outputs] == ["y", "z"]
    assert engine.device == "cpu"
    info = engine.inspect()
    assert info["step_count"] == len(info["steps"]) > 0
    assert {"name", "op", "tactic"} <= set(info["steps"][0])


def test_saved_engine_loads_and_runs_at_every_profile_shape(engine, model_path, tmp_path):
    path = tmp_path / "mlp.kiln"
    engine.save(path)
    loaded = kiln.load(path)
    session = loaded.session()
    for batch in (1, 4, 8):
        x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
        want = reference(model_path, x)
        got = session.run({"x": x})
        np.testing.assert_allclose(got["y"], want[0], rtol=1e-5, atol=1e-6)


def test_dynamic_dims_not_named_are_built_at_one_with_a_warning(model_path):
    with pytest.warns(UserWarning, match="input 'x' has dynamic shape batchx4; building for 1x4"):
        e = kiln.build(model_path, device="cpu", progress=False)
    assert e.inputs[0].shape == (1, 4)


def test_progress_callback_sees_every_phase_end(model_path):
    seen = []
    kiln.build(model_path, device="cpu", shapes={"x": (2, 4)}, progress=lambda p, f: seen.append((p, f)))
    phases = {p for p, _ in seen}
    assert {"optimize", "lower", "plan"} <= phases
    assert all(0.0 <= f <= 1.0 for _, f in seen)
    assert any(f == 1.0 for p, f in seen if p == "plan")


# ---- running --------------------------------------------------------------------------------


def test_onnxruntime_form_and_output_selection(engine, model_path):
    session = engine.session()
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    want = reference(model_path, x)
    all_out = session.run(None, {"x": x})
    assert isinstance(all_out, list) and len(all_out) == 2
    np.testing.assert_allclose(all_out[1], want[1], rtol=1e-5, atol=1e-6)
    (z,) = session.run(["z"], {"x": x})
    np.testing.assert_allclose(z, want[1], rtol=1e-5, atol=1e-6)
    only = session.run({"x": x}, outputs=["z", "y"])
    assert list(only) == ["z", "y"]
    assert [i.name for i in session.get_inputs()] == ["x"]
    assert [o.name for o in session.get_outputs()] == ["y", "z"]


def test_non_contiguous_and_list_inputs_are_read(engine, model_path):
    session = engine.session()
    base = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)
    x = base[:, ::2]  # every other column: not contiguous
    assert not x.flags.c_contiguous
    want = reference(model_path, np.ascontiguousarray(x))
    np.testing.assert_allclose(session.run({"x": x})["y"], want[0], rtol=1e-5, atol=1e-6)
    listed = session.run({"x": x.tolist()})
    np.testing.assert_allclose(listed["y"], want[0], rtol=1e-5, atol=1e-6)
    frozen = np.ascontiguousarray(x)
    frozen.flags.writeable = False  # read in place, never written
    np.testing.assert_allclose(session.run({"x": frozen})["y"], want[0], rtol=1e-5, atol=1e-6)


def test_empty_batch(model_path):
    e = kiln.build(model_path, device="cpu", profiles={"x": ((0, 4), (2, 4), (4, 4))}, progress=False)
    out = e.session().run({"x": np.zeros((0, 4), np.float32)})
    assert out["y"].shape == (0, 3) and out["y"].dtype == np.float32


def test_outputs_survive_the_next_run(engine):
    session = engine.session()
    a = session.run({"x": np.ones((2, 4), np.float32)})["y"]
    kept = a.copy()
    session.run({"x": np.full((2, 4), -5.0, np.float32)})
    np.testing.assert_array_equal(a, kept)


NUMERIC_TYPES = [
    (TensorProto.FLOAT, np.float32),
    (TensorProto.FLOAT16, np.float16),
    (TensorProto.DOUBLE, np.float64),
    (TensorProto.INT8, np.int8),
    (TensorProto.INT16, np.int16),
    (TensorProto.INT32, np.int32),
    (TensorProto.INT64, np.int64),
    (TensorProto.UINT8, np.uint8),
    (TensorProto.UINT16, np.uint16),
    (TensorProto.UINT32, np.uint32),
    (TensorProto.UINT64, np.uint64),
    (TensorProto.BOOL, np.bool_),
    (TensorProto.COMPLEX64, np.complex64),
    (TensorProto.COMPLEX128, np.complex128),
]


@pytest.mark.parametrize("elem_type,np_type", NUMERIC_TYPES, ids=[t.__name__ for _, t in NUMERIC_TYPES])
def test_every_numpy_type_round_trips(elem_type, np_type):
    e = kiln.build(identity_model(elem_type), device="cpu", progress=False)
    assert e.inputs[0].dtype is np_type
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 3)) * 50).astype(np_type)
    if np.issubdtype(np_type, np.complexfloating):
        x = x + 1j * x[::-1]
    y = e.session().run({"x": x})["y"]
    assert y.dtype == np_type and y.shape == (2, 3)
    np.testing.assert_array_equal(y, x)


def test_strings_round_trip():
    e = kiln.build(identity_model(TensorProto.STRING), device="cpu", progress=False)
    assert e.inputs[0].dtype is np.object_
    x = np.array([["a", "bb", ""], ["ünï", "x y", "7"]], dtype=object)
    y = e.session().run({"x": x})["y"]
    assert y.dtype == object and y.shape == (2, 3)
    assert y.tolist() == x.tolist()


# ---- errors ---------------------------------------------------------------------------------


def test_input_errors_name_what_is_wrong(engine):
    session = engine.session()
    x = np.zeros((2, 4), np.float32)
    cases = [
        ({"x": x, "extra": x}, "unknown input 'extra'; the model takes x"),
        ({}, "missing input 'x'"),
        ({"x": x.astype(np.float64)}, "input 'x': the model takes float32, got float64"),
        ({"x": np.zeros((9, 4), np.float32)}, "input 'x' has shape 9x4, outside the engine's profile"),
        ({"x": np.zeros((2, 4, 1), np.float32)}, "input 'x'"),
        ({"x": np.array(["a", "b"])}, "input 'x': the model takes float32, got str"),
        ({"x": object()}, "input 'x'"),
    ]
    for feed, message in cases:
        with pytest.raises(kiln.InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
            session.run(feed)
    with pytest.raises(kiln.InvalidInput, match="unknown output 'w'; the model's outputs are y, z"):
        session.run(["w"], {"x": x})
    with pytest.raises(kiln.InvalidInput):  # also a ValueError, as NumPy users expect
        session.run({"x": x.astype(np.int32)})
    assert issubclass(kiln.InvalidInput, ValueError) and issubclass(kiln.InvalidInput, kiln.KilnError)
    # The session still runs after every error.
    assert session.run({"x": x})["y"].shape == (2, 3)


def test_usage_errors(model_path):
    with pytest.raises(kiln.UsageError, match="run\\(\\) takes a dict"):
        kiln.build(model_path, device="cpu", shapes={"x": (1, 4)}, progress=False).session().run(5)
    with pytest.raises(kiln.UsageError, match="no-such-pass"):
        kiln.build(model_path, device="cpu", disable_passes=["no-such-pass"], progress=False)
    with pytest.raises(kiln.UsageError, match="model must be a path, bytes or an onnx.ModelProto"):
        kiln.build(3.5, device="cpu")
    with pytest.raises(kiln.UsageError, match="expected \\(min, opt, max\\)"):
        kiln.build(model_path, device="cpu", profiles={"x": ((1, 4), (2, 4))})
    with pytest.raises(kiln.UsageError, match="min <= opt <= max"):
        kiln.build(model_path, device="cpu", profiles={"x": ((4, 4), (2, 4), (8, 4))}, progress=False)
    with pytest.raises(kiln.KilnError, match="device"):
        kiln.build(model_path, device="tpu", shapes={"x": (1, 4)}, progress=False)


def test_model_errors(tmp_path):
    with pytest.raises(kiln.InvalidModel):
        kiln.build(b"not an onnx model", device="cpu", progress=False)
    with pytest.raises(kiln.InvalidModel, match="no such file"):
        kiln.build(str(tmp_path / "missing.onnx"), device="cpu", progress=False)
    custom = helper.make_model(
        helper.make_graph(
            [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
            "custom",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
        ir_version=10,
    )
    with pytest.raises(kiln.InvalidModel, match="Frobnicate"):
        kiln.build(custom, device="cpu", progress=False)
    bad = tmp_path / "bad.kiln"
    bad.write_bytes(b"KILN" + b"\0" * 60)
    with pytest.raises(kiln.InvalidModel):
        kiln.load(bad)
    with pytest.raises(kiln.InvalidModel, match="no such file"):
        kiln.load(tmp_path / "missing.kiln")


def test_save_errors_leave_no_file(engine, tmp_path):
    target = tmp_path / "no-such-dir" / "e.kiln"
    with pytest.raises(kiln.KilnError):
        engine.save(target)
    assert not target.exists()


# ---- threads --------------------------------------------------------------------------------


def test_sessions_on_several_threads(engine, model_path):
    inputs = [np.random.default_rng(10 + k).standard_normal((1 + k % 8, 4)).astype(np.float32) for k in range(8)]
    wants = [reference(model_path, x)[0] for x in inputs]
    errors = []
    shared = engine.session()

    def work(k, session):
        try:
            for r in range(25):
                i = (k + r) % len(inputs)
                got = session.run({"x": inputs[i]})["y"]
                np.testing.assert_allclose(got, wants[i], rtol=1e-5, atol=1e-6)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    # Four threads with a session each, and four sharing one (their runs are serialized).
    threads = [threading.Thread(target=work, args=(k, engine.session())) for k in range(4)]
    threads += [threading.Thread(target=work, args=(k, shared)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_version():
    assert kiln.__version__.count(".") == 2


# ---- bench and conformance ------------------------------------------------------------------


def test_bench_reports_what_kiln_bench_json_does(engine):
    report = kiln.bench(engine, iterations=7, warmup=1)
    assert report["device"] == "cpu"
    assert report["iterations"] == 7 and report["warmup"] == 1
    lat = report["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["p99"] <= lat["max"]
    assert report["throughput_per_s"] > 0
    assert report["shapes"]["x"]["opt"] == [4, 4]
    # Given inputs set the shape; the per-step profile names every step.
    x = np.zeros((2, 4), np.float32)
    profiled = kiln.bench(engine, {"x": x}, iterations=3, warmup=0, profile=True)
    steps = engine.inspect()["steps"]
    assert [p["name"] for p in profiled["profile"]] == [s["name"] for s in steps]
    assert "shape_change" in profiled  # the engine has a range of batches


def test_bench_errors(engine):
    with pytest.raises(kiln.InvalidInput, match="unknown input 'q'"):
        kiln.bench(engine, {"q": np.zeros((1, 4), np.float32)}, iterations=1)
    with pytest.raises(kiln.InvalidInput, match="outside the engine's profile"):
        kiln.bench(engine, {"x": np.zeros((9, 4), np.float32)}, iterations=1)
    with pytest.raises(kiln.UsageError, match="either iterations or duration"):
        kiln.bench(engine, iterations=1, duration=1.0)
    with pytest.raises(kiln.UsageError, match="must not be negative"):
        kiln.bench(engine, warmup=-1, iterations=1)
    with pytest.raises(kiln.UsageError):
        kiln.bench("model.onnx")


def conformance_case(root, name, y_expected):
    """An ONNX backend test folder: Relu over a fixed input, expecting `y_expected`."""
    folder = root / name
    data = folder / "test_data_set_0"
    data.mkdir(parents=True)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), folder / "model.onnx")
    x = np.array([[-1, 0, 1], [2, -3, 4]], np.float32)
    (data / "input_0.pb").write_bytes(numpy_helper.from_array(x, "x").SerializeToString())
    (data / "output_0.pb").write_bytes(numpy_helper.from_array(y_expected(x), "y").SerializeToString())


def test_conformance_passes_and_fails_tests(tmp_path):
    conformance_case(tmp_path, "test_relu_right", lambda x: np.maximum(x, 0))
    conformance_case(tmp_path, "test_relu_wrong", lambda x: np.maximum(x, 0) + 1)
    report = kiln.conformance(tmp_path, optimize=True, jobs=2)
    assert (report["passed"], report["failed"], report["total"]) == (1, 1, 2)
    (failure,) = report["failures"]
    assert failure["test"] == "test_relu_wrong" and "differ" in failure["reason"]
    only = kiln.conformance([tmp_path], filter="right")
    assert (only["passed"], only["total"]) == (1, 1)
    with pytest.raises(kiln.UsageError, match="is not a folder"):
        kiln.conformance(tmp_path / "missing")


def test_device_tensors_on_a_cpu_engine_are_refused(engine):
    class FakeCudaTensor:  # a DLPack producer claiming CUDA memory
        def __dlpack_device__(self):
            return (2, 0)

        def __dlpack__(self, **kwargs):
            raise BufferError("no data here")

    with pytest.raises(kiln.InvalidInput, match="runs on the CPU"):
        engine.session().run({"x": FakeCudaTensor()})


def test_every_public_name_has_a_docstring():
    missing = []
    for name in kiln.__all__:
        obj = getattr(kiln, name)
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        if isinstance(obj, type):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or attr in ("count", "index"):
                    continue
                doc = getattr(member, "__doc__", None) or getattr(getattr(member, "fget", None), "__doc__", None)
                if not (doc or "").strip():
                    missing.append(f"{name}.{attr}")
    assert not missing, missing
