"""Stage registry: name -> Stage class."""

from hfl.engine.stage import Stage
from hfl.stages.caption import CaptionStage
from hfl.stages.identity import IdentityStage
from hfl.stages.mine import MineStage
from hfl.stages.pair import PairStage
from hfl.stages.quality import QualityStage
from hfl.stages.shard import ShardStage
from hfl.stages.split import SplitStage
from hfl.stages.synth import SynthStage
from hfl.stages.validate import ValidateStage

STAGES: dict[str, type[Stage]] = {
    s.name: s
    for s in (
        MineStage,
        QualityStage,
        PairStage,
        IdentityStage,
        CaptionStage,
        SynthStage,
        ValidateStage,
        SplitStage,
        ShardStage,
    )
}
