"""The pipeline's stages: RAG → Assemble → Inference → Post-process → Stream."""

from orchestrator.stages.assemble import AssembleStage
from orchestrator.stages.inference import InferenceStage
from orchestrator.stages.job import Job
from orchestrator.stages.postprocess import PostProcessStage, QualityHook
from orchestrator.stages.rag import RagStage
from orchestrator.stages.stream import StreamStage

__all__ = [
    "AssembleStage",
    "InferenceStage",
    "Job",
    "PostProcessStage",
    "QualityHook",
    "RagStage",
    "StreamStage",
]
