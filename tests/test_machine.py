"""The machine a result was computed on (htf.machine): read from /proc/cpuinfo, one line to show."""
from htf.machine import cpu_model, describe_machine, machine_record, vector_flags

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 sse4_2 avx fma avx2 bmi2
processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse sse2 sse4_2 avx fma avx2 bmi2
"""


def test_the_cpu_model_and_its_vector_flags_are_read_from_cpuinfo():
    assert cpu_model(CPUINFO) == "AMD EPYC"
    assert vector_flags(CPUINFO) == ["sse4_2", "avx", "avx2", "fma"]


def test_a_machine_without_cpuinfo_still_gets_a_record(tmp_path):
    record = machine_record(tmp_path / "no-such-file")
    assert record["vector_flags"] == [] and record["cores"] >= 1 and record["torch"]
    assert "no vector flags read" in describe_machine(record)


def test_the_record_reads_this_machine_and_shows_in_one_line(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    record = machine_record(tmp_path / "cpuinfo")
    assert record["cpu"] == "AMD EPYC"
    assert describe_machine(record).startswith("AMD EPYC (sse4_2, avx, avx2, fma), ")
