"""What tags say about where a run came from: the code's commit and state, the libraries, the
DVC experiment. (The sweep tag has its own file, test_sweep.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, git
from mnist_pipeline.tags import LIBRARY_TAGS, MACHINE_PREFIX, MACHINE_TAGS
from mnist_pipeline.tracking import provenance


def test_git_tags_ignore_params_and_dvc_files_but_not_code(tmp_path):
    git(tmp_path, "init", "-q")
    for name in ("params.yaml", "dvc.lock", "train.py"):
        (tmp_path / name).write_text("v1\n")
    (tmp_path / ".gitignore").write_text((REPO_ROOT / ".gitignore").read_text())
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "v1")
    (tmp_path / "params.yaml").write_text("v2\n")
    (tmp_path / "dvc.lock").write_text("v2\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ".gitignore").write_text("/mnist.npz\n")
    (tmp_path / "dvc_plots").mkdir()  # `dvc plots show`'s HTML, ignored by the project's rules
    (tmp_path / "dvc_plots" / "index.html").write_text("<html>\n")
    tags = provenance.git_tags(tmp_path)
    assert tags["git_dirty"] == "False" and len(tags["git_commit"]) == 40
    assert tags["mlflow.source.git.commit"] == tags["git_commit"]

    (tmp_path / "train.py").write_text("v2\n")
    (tmp_path / "data" / "helper.py").write_text("new\n")
    tags = provenance.git_tags(tmp_path)
    assert tags["git_dirty"] == "True"
    assert tags["git_dirty_files"] == "data/helper.py, train.py"


def test_outside_git_the_commit_is_unknown(tmp_path):
    assert provenance.git_tags(tmp_path)["git_commit"] == "unknown"


def test_dvc_exp_name_becomes_a_tag(monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lobe")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123abc")
    tags = provenance.environment_tags()
    assert tags["dvc_exp_name"] == "brisk-lobe" and tags["dvc_baseline_rev"] == "0123abc"
    assert tags["keras_backend"] == "tensorflow"


# The first lines of /proc/cpuinfo on two machines (trimmed), and what macOS's sysctl says.
EPYC_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx avx2 sha_ni vaes

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
microcode\t: only in the second CPU's block, which is never read
"""
GRAVITON_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1
"""
INTEL_MAC_SYSCTL = {
    "machdep.cpu.brand_string": "Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz",
    "machdep.cpu.features": "FPU VME SSE SSE2 SSE3 FMA SSE4.1 SSE4.2 AVX1.0",
    "machdep.cpu.leaf7_features": "SMEP BMI1 AVX2 BMI2",
    "hw.l1dcachesize": "32768",
    "hw.l1icachesize": "32768",
    "hw.l2cachesize": "262144",
    "hw.l3cachesize": "16777216",
}


def cpuinfo_file(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return str(path)


def test_the_cpu_is_read_from_the_first_processor_only(tmp_path):
    fields = provenance.first_cpu_fields(cpuinfo_file(tmp_path, EPYC_CPUINFO))
    assert "microcode" not in fields
    assert provenance.linux_cpu(fields) == ("AMD EPYC", "AuthenticAMD family 25 model 1 stepping 1")
    flags = provenance.normalized_flags(fields["flags"])
    assert provenance.isa_level("x86_64", flags) == "AVX2"


def test_an_arm_cpu_is_named_by_its_implementer_and_part(tmp_path):
    fields = provenance.first_cpu_fields(cpuinfo_file(tmp_path, GRAVITON_CPUINFO))
    assert provenance.linux_cpu(fields) == (
        "unknown",
        "implementer 0x41 part 0xd40 variant 0x1 revision 1",
    )
    assert provenance.isa_level("aarch64", provenance.normalized_flags(fields["Features"])) == "SVE"


def test_without_cpuinfo_the_cpu_is_unknown(tmp_path):
    fields = provenance.first_cpu_fields(str(tmp_path / "absent"))
    assert fields == {} and provenance.linux_cpu(fields) == ("unknown", "")


@pytest.mark.parametrize(
    ("arch", "flags", "level"),
    [
        ("x86_64", "sse4_2 avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8", "AMX"),
        ("x86_64", "sse4_2 avx avx2 fma avx512f avx512_vnni", "AVX512_VNNI"),
        ("x86_64", "sse4_2 avx avx2 fma avx512f avx512cd", "AVX512"),
        ("x86_64", "sse4_2 avx avx2", "AVX"),  # AVX2 without FMA: XLA's AVX2 needs both
        ("x86_64", "sse4_1 sse4_2", "SSE4_2"),
        ("x86_64", "SSE4.1 SSE4.2", "SSE4_2"),  # macOS's spelling
        ("x86_64", "sse sse2 sse3", "other"),
        ("AMD64", "SSE4.2 AVX1.0 FMA AVX2", "AVX2"),  # macOS's spelling
        ("arm64", "asimd", "NEON"),
        ("aarch64", "fp asimd sve sve2", "SVE2"),
        ("riscv64", "avx2 fma", "other"),
    ],
)
def test_isa_level_is_the_best_xla_level_the_flags_allow(arch, flags, level):
    assert provenance.isa_level(arch, provenance.normalized_flags(flags)) == level


def test_caches_are_listed_by_level_and_kind(tmp_path):
    for index, (level, kind, size) in enumerate(
        [("1", "Data", "48K"), ("1", "Instruction", "32K"), ("2", "Unified", "2048K")]
    ):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(f"{value}\n")
    (tmp_path / "index3").mkdir()  # unreadable: left out
    assert provenance.linux_caches(str(tmp_path)) == "L1d 48K, L1i 32K, L2 2048K"
    assert provenance.linux_caches(str(tmp_path / "absent")) == ""


def test_macos_cpu_name_flags_and_caches_come_from_sysctl():
    cpu, flags, caches = provenance.macos_cpu(INTEL_MAC_SYSCTL)
    assert cpu == "Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz"
    assert provenance.isa_level("x86_64", flags) == "AVX2"
    assert caches == "L1d 32K, L1i 32K, L2 256K, L3 16384K"
    # Apple's CPUs have no L3 for sysctl to report; a size of 0 is no cache either.
    apple = {
        "machdep.cpu.brand_string": "Apple M2",
        "hw.l1dcachesize": "65536",
        "hw.l2cachesize": "0",
    }
    assert provenance.macos_cpu(apple) == ("Apple M2", set(), "L1d 64K")


def test_every_training_records_its_machine_under_documented_tags(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
    tags = provenance.environment_tags()
    machine = {name for name in tags if name.startswith(MACHINE_PREFIX)}
    assert machine <= MACHINE_TAGS.keys()
    always = {
        "machine.cpu",
        "machine.isa",
        "machine.cpus",
        "machine.usable_cpus",
        "machine.intra_op_threads",
        "machine.arch",
    }
    assert always | {"machine.xla_flags", "machine.tf_git_version"} <= machine
    assert tags["machine.xla_flags"] == "--xla_cpu_max_isa=AVX2"
    assert tags["machine.cpus"] == str(os.cpu_count())
    assert set(LIBRARY_TAGS) <= tags.keys()
    monkeypatch.delenv("XLA_FLAGS")
    assert "machine.xla_flags" not in provenance.machine_tags()


@pytest.mark.parametrize(
    ("value", "threads"),
    [(None, 6), ("3", 3), ("0", 6), ("-2", 6), ("two", 6), (" 4 ", 4)],
)
def test_the_thread_count_is_tensorflows_setting_or_its_default(value, threads):
    """TensorFlow reads TF_NUM_INTRAOP_THREADS; 0 or anything not a positive count: its default."""
    environ = {} if value is None else {"TF_NUM_INTRAOP_THREADS": value}
    assert provenance.intra_op_threads(environ, usable_cpus=6) == threads


def test_machine_tags_describe_the_given_environment_not_this_one(monkeypatch):
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "5")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX")
    assert provenance.machine_tags()["machine.intra_op_threads"] == "5"
    other = provenance.machine_tags({})
    assert other["machine.intra_op_threads"] == other["machine.usable_cpus"]
    assert "machine.xla_flags" not in other


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and /sys")
def test_machine_tags_start_no_process_on_linux(monkeypatch):
    """It runs in every training: files only (platform.processor() would run `uname -p`)."""

    def no_process(*args, **kwargs):
        raise AssertionError(f"machine_tags started a process: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    tags = provenance.machine_tags()
    assert tags["machine.cpu"] != "" and tags["machine.isa"] != ""
