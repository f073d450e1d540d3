"""Per-method flow settings: what samples record and what the flow cache key hashes."""
from htf.config import load_config
from htf.settings import upgrade_settings
from pipeline.config import PipelineConfig, content_fingerprint, flow_cache_key, sample_settings


def _cfg(*overrides: str) -> PipelineConfig:
    return load_config(PipelineConfig, overrides=list(overrides))


def test_with_dis_a_farneback_setting_does_not_change_the_flow_cache_key():
    assert flow_cache_key(_cfg("flow.method=dis", "flow.farneback.levels=5")) == flow_cache_key(_cfg("flow.method=dis"))


def test_with_dis_a_dis_setting_changes_the_flow_cache_key():
    assert flow_cache_key(_cfg("flow.method=dis", "flow.dis.preset=fast")) != flow_cache_key(_cfg("flow.method=dis"))


def test_runtime_settings_change_neither_the_cache_key_nor_the_shard_fingerprint():
    learned = ("flow.method=raft_small", "flow.learned.ckpt=things")
    base = _cfg(*learned)
    other = _cfg(*learned, "flow.device=cuda", "flow.fp16=false", "flow.batch_size=2",
                 "flow.learned.allow_random_init=true")
    assert flow_cache_key(other) == flow_cache_key(base)
    assert content_fingerprint(other) == content_fingerprint(base)
    assert flow_cache_key(_cfg("flow.method=raft_small", "flow.learned.ckpt=sintel")) != flow_cache_key(base)


def test_samples_record_only_the_chosen_methods_block():
    flow = sample_settings(_cfg("flow.method=farneback"))["flow"]
    assert flow["farneback"]["levels"] == 3 and "dis" not in flow and "learned" not in flow


def test_flat_flow_settings_of_older_samples_are_read_in_the_per_method_shape():
    old = {"frames": {"short_side": 0},
           "flow": {"method": "farneback", "encoding": "signed", "farneback_levels": 4, "dis_preset": "fast",
                    "ckpt": None, "allow_random_init": False, "device": "cpu"}}
    assert upgrade_settings(old) == {"frames": {"short_side": 0},
                                     "flow": {"method": "farneback", "encoding": "signed",
                                              "farneback": {"levels": 4}, "device": "cpu"}}
