"""Every curate stage, in the order they run. Adding a stage is one module and one line here."""

from s1ray.curate import decontam, dedup, quality, scoring, script

STAGES = [
    quality.STAGE,
    dedup.STAGE,
    decontam.STAGE,
    script.STAGE,
    scoring.STAGE,  # model stages last: they score only the rows every stage above keeps
]
