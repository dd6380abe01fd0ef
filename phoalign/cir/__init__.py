"""Composed image retrieval (CLIP4Cir and CLIP4Cir-MoE): data, combiners, metrics, the two training stages."""
from .data import CIRData, CIRDataset, cir_collate, cir_transform, cir_transform_for, fashioniq_caption, read_cirr, read_fashioniq
from .combiners import Combiner, MoECombiner, SparseMoE, create_combiner, element_wise_sum, load_combiner, save_combiner
from .metrics import check_cirr_submission, cirr_recalls, fashioniq_average, fashioniq_recalls, write_cirr_submission
from .train import cir_config, encode_split, finetune, submit, train_combiner, validate
