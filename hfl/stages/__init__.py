"""Stage registry: name -> Stage class."""

from hfl.engine.stage import Stage
from hfl.stages.mine import MineStage
from hfl.stages.quality import QualityStage
from hfl.stages.shard import ShardStage

STAGES: dict[str, type[Stage]] = {s.name: s for s in (MineStage, QualityStage, ShardStage)}
