"""Declared stage resources: requested as they are where the cluster can grow, fitted where it cannot."""

import pytest

from s1ray import resources
from s1ray.models.generation import GenerationConfig
from s1ray.resources import Resources, cluster_can_grow, fit


def test_declared_resources_are_kept_on_a_cluster_that_can_grow():
    pools = {"traces": Resources(num_cpus=4, max_actors=8), "lengths": Resources(num_cpus=1, max_actors=2)}
    assert fit(pools, can_grow=True, total_cpus=0) == pools  # an empty autoscaling cluster: nothing shrunk


def test_fixed_cluster_pools_shrink_to_leave_room_for_read_tasks():
    pools = {"a": Resources(1.0, min_actors=2, max_actors=2), "b": Resources(0.5), "c": Resources(1.0)}
    assert fit({"a": Resources(0.5), "b": Resources(0.5)}, can_grow=False, total_cpus=2) == \
        {"a": Resources(0.5), "b": Resources(0.5)}  # 1 CPU of actors + 1 for a read task: fits as is
    fitted = fit(pools, can_grow=False, total_cpus=2)
    assert sum(p.cpus_at_most for p in fitted.values()) <= 1.0 + 1e-6  # a 1-CPU read task still fits
    assert abs(fitted["a"].num_cpus - 2 * fitted["b"].num_cpus) < 0.01  # proportions kept
    assert fitted["a"].max_actors == 2 and fitted["a"].num_gpus == 0


def test_concurrency_as_count_or_range():
    assert Resources.of(GenerationConfig(model="tiny:tiny", concurrency=3)) == Resources(1.0, 0.0, 3, 3)
    r = Resources.of(GenerationConfig(model="tiny:tiny", concurrency=[1, 4], num_cpus=2, num_gpus=1))
    assert (r.min_actors, r.max_actors, r.num_cpus, r.num_gpus) == (1, 4, 2.0, 1.0)
    assert r.ray_args() == {"num_cpus": 2.0, "num_gpus": 1.0}
    with pytest.raises(ValueError, match="min <= max"):
        Resources.of(GenerationConfig(model="tiny:tiny", concurrency=[3, 2]))


def test_who_can_grow(monkeypatch):
    monkeypatch.delenv(resources.AUTOSCALING_ENV, raising=False)
    monkeypatch.setattr(resources, "_cluster", {"started_locally": True, "autoscaling": None})
    assert cluster_can_grow() is False  # the private local Ray s1ray started
    monkeypatch.setenv(resources.AUTOSCALING_ENV, "1")
    assert cluster_can_grow() is True  # the cluster's environment says so
    monkeypatch.setattr(resources, "_cluster", {"started_locally": True, "autoscaling": False})
    assert cluster_can_grow() is False  # ray.autoscaling wins over the environment
    assert cluster_can_grow(True) is True


def test_a_joined_cluster_can_grow_when_its_autoscaler_publishes_larger_node_types(monkeypatch):
    import ray
    from ray._private.state import state

    monkeypatch.delenv(resources.AUTOSCALING_ENV, raising=False)
    monkeypatch.setattr(resources, "_cluster", {"started_locally": False, "autoscaling": None})
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 0.0, "memory": 1e9})
    monkeypatch.setattr(state, "get_max_resources_from_cluster_config", lambda: {"CPU": 64, "GPU": 16})
    assert cluster_can_grow() is True
    assert resources.cluster_capacity() == {"CPU": 64.0, "GPU": 16.0}  # the sweep sizes against this
    monkeypatch.setattr(state, "get_max_resources_from_cluster_config", lambda: None)  # autoscaler v1 / none
    assert cluster_can_grow() is False
    assert resources.cluster_capacity() == {"CPU": 0.0, "memory": 1e9}
