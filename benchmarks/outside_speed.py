"""Encode speed of published models through phoalign (`phoalign.outside`) beside the library that publishes them.

    python benchmarks/outside_speed.py                      # random configs of ViT-B/32's shape, smaller (offline, CPU)
    python benchmarks/outside_speed.py --images 64 --layers 2 --width 128   # smoke test
    python benchmarks/outside_speed.py --real               # the real models (a connected machine: downloads them)

Per family, on the same preprocessed batches of `--batch` random 3xSxS images (S: the model's input size):
- phoalign: `embed_images(model, batch)` of the `outside_model(name)` (tower, identity head, L2 normalisation, no autocast on CPU);
- library: the publisher's own call, normalised the same way: transformers `get_image_features` (hf CLIP, hf SigLIP,
  and the CLIP inside a sentence-transformers model), open_clip `encode_image(normalize=True)`;
- ratio: phoalign's time / the library's (1.00 = no overhead);
- files: `encode_images(model, folder)` on `--images` JPEG files written here (decoding and resizing included), for scale.
For the sentence-transformers pair a text row compares `encode_texts(model, texts)` with `SentenceTransformer.encode`
(both tokenize). Each measurement is the median of `--repeats` runs after one untimed batch; threads: `torch.get_num_threads()`.
"""
import argparse, os, statistics, sys, tempfile, time, json
from pathlib import Path

def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--images', type=int, default=128, help='images per measurement')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--repeats', type=int, default=3, help='timed runs per row (the median is shown)')
    ap.add_argument('--layers', type=int, default=4, help='transformer layers of the random configs (ViT-B/32: 12)')
    ap.add_argument('--width', type=int, default=256, help='vision width of the random configs (ViT-B/32: 768)')
    ap.add_argument('--size', type=int, default=224, help='image side of the random configs')
    ap.add_argument('--real', action='store_true', help='the real models by name (needs the Hub or a filled cache)')
    ap.add_argument('--families', default='hf-clip,hf-siglip,open_clip,sbert', help='comma-separated rows to run')
    return ap.parse_args()

a = parse()
if not a.real: os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('PHOALIGN_CACHE', tempfile.mkdtemp())
import warnings; warnings.simplefilter('ignore')
import numpy as np, torch, torch.nn.functional as F
from PIL import Image
from phoalign.outside import outside_model
from phoalign.encode import embed_images, encode_images, encode_texts

def median_rate(fn, n:int) -> float:
    "Items per second of `fn()` (which handles `n` items): the median of the repeats, after one untimed call."
    fn(); times = []
    for _ in range(a.repeats):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return n / statistics.median(times)

def random_hf(folder:Path, kind:str) -> Path:
    "A random transformers CLIP/SigLIP of the chosen size, with the tiny BPE tokenizer and an image processor, saved to `folder`."
    import transformers as T
    from phoalign.testing import write_tiny_hf_clip
    write_tiny_hf_clip(folder, kind)   # tokenizer, processor; the model is replaced below
    vocab = T.AutoConfig.from_pretrained(folder).text_config.vocab_size
    vision = dict(hidden_size=a.width, intermediate_size=4 * a.width, num_hidden_layers=a.layers, num_attention_heads=max(1, a.width // 64),
                  image_size=a.size, patch_size=32 if kind == 'clip' else 16)
    w = 128 if kind == 'clip' else a.width   # SigLIP's text width is its embedding width, the same as its image side's
    text = dict(vocab_size=vocab, hidden_size=w, intermediate_size=4 * w, num_hidden_layers=2, num_attention_heads=2)
    if kind == 'clip':
        model = T.CLIPModel(T.CLIPConfig(text_config=dict(text, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1),
                                         vision_config=vision, projection_dim=128))
        T.CLIPImageProcessor(size={'shortest_edge': a.size}, crop_size={'height': a.size, 'width': a.size}).save_pretrained(folder)
    else:
        model = T.SiglipModel(T.SiglipConfig(text_config=dict(text, max_position_embeddings=16), vision_config=vision))
        T.SiglipImageProcessor(size={'height': a.size, 'width': a.size}).save_pretrained(folder)
    model.save_pretrained(folder)
    return folder

def random_openclip(folder:Path) -> tuple:
    "A random open_clip ViT of the chosen size (registered from a JSON config) and its weights file: (arch, file)."
    import open_clip
    arch = 'bench-vit'
    (folder/f'{arch}.json').write_text(json.dumps(dict(embed_dim=128, vision_cfg=dict(image_size=a.size, layers=a.layers, width=a.width, patch_size=32),
                                                      text_cfg=dict(context_length=77, vocab_size=49408, width=128, heads=2, layers=2))))
    open_clip.add_model_config(folder/f'{arch}.json')
    torch.save(open_clip.create_model(arch).state_dict(), folder/'bench.pt')
    return arch, folder/'bench.pt'

def row(name:str, model, direct, batches:list, folder:Path) -> dict:
    n = sum(len(b) for b in batches)
    ours = median_rate(lambda: [embed_images(model, b) for b in batches], n)
    theirs = median_rate(lambda: [direct(b) for b in batches], n)
    files = median_rate(lambda: encode_images(model, folder, batch_size=a.batch, workers=0, progress=False), len(list(folder.glob('*.jpg'))))
    return dict(family=name, phoalign=ours, library=theirs, ratio=theirs / ours, files=files)

def main():
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp())
    rng = np.random.default_rng(0)
    photos = tmp/'photos'; photos.mkdir()
    for i in range(a.images): Image.fromarray(rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)).save(photos/f'{i:04d}.jpg')
    wanted, rows, text_rows = a.families.split(','), [], []
    with torch.no_grad():
        for fam in ('hf-clip', 'hf-siglip'):
            if fam not in wanted: continue
            kind = fam.split('-')[1]
            name = ('hf:openai/clip-vit-base-patch32' if kind == 'clip' else 'hf:google/siglip-base-patch16-224') if a.real else f'hf:{random_hf(tmp/kind, kind)}'
            model = outside_model(name)
            from transformers import AutoModel
            ref = AutoModel.from_pretrained(name[3:]).eval()
            side = model.image_tower.pretrained_cfg['input_size'][-1]
            batches = [torch.randn(a.batch, 3, side, side) for _ in range(max(1, a.images // a.batch))]
            rows.append(row(fam, model, lambda b: F.normalize(ref.get_image_features(pixel_values=b).pooler_output, dim=-1), batches, photos))
        if 'open_clip' in wanted:
            import open_clip
            if a.real: arch, tag = 'ViT-B-32', 'laion2b_s34b_b79k'; ref = open_clip.create_model(arch, pretrained=tag).eval()
            else: arch, tag = random_openclip(tmp); ref = open_clip.create_model(arch, pretrained=str(tag)).eval()
            model = outside_model(f'open_clip:{arch}/{tag}')
            side = model.image_tower.pretrained_cfg['input_size'][-1]
            batches = [torch.randn(a.batch, 3, side, side) for _ in range(max(1, a.images // a.batch))]
            rows.append(row('open_clip', model, lambda b: ref.encode_image(b, normalize=True), batches, photos))
        if 'sbert' in wanted:
            from sentence_transformers import SentenceTransformer
            if a.real: image, text = 'clip-ViT-B-32', 'clip-ViT-B-32-multilingual-v1'; st_image, st_text = (SentenceTransformer(f'sentence-transformers/{n}', device='cpu') for n in (image, text))
            else:
                import shutil
                from phoalign.testing import write_tiny_sbert_clip
                image, text = write_tiny_sbert_clip(tmp/'sb')
                shutil.rmtree(image/'0_CLIPModel'); random_hf(image/'0_CLIPModel', 'clip')   # the chosen size; its projection is 128-d
                from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
                SentenceTransformer(modules=[Transformer(str(tmp/'sb'/'bert'), max_seq_length=32), Pooling(32, 'mean'),
                                             Dense(32, 128, bias=False, activation_function=torch.nn.Identity())], device='cpu').save(str(text))
                st_image, st_text = SentenceTransformer(str(image), device='cpu'), SentenceTransformer(str(text), device='cpu')
            model = outside_model(f'sbert:{image}+{text}')
            side = model.image_tower.pretrained_cfg['input_size'][-1]
            batches = [torch.randn(a.batch, 3, side, side) for _ in range(max(1, a.images // a.batch))]
            clip = st_image[0].model.eval()
            rows.append(row('sbert (image)', model, lambda b: F.normalize(clip.get_image_features(pixel_values=b).pooler_output, dim=-1), batches, photos))
            texts = [f'một hình vuông đỏ {i}' if i % 2 else 'a blue circle' for i in range(a.images)]
            ours = median_rate(lambda: encode_texts(model, texts, batch_size=a.batch, device='cpu'), len(texts))
            theirs = median_rate(lambda: st_text.encode(texts, batch_size=a.batch, convert_to_tensor=True, normalize_embeddings=True), len(texts))
            text_rows.append(dict(family='sbert (text)', phoalign=ours, library=theirs, ratio=theirs / ours))
    print(f'CPU, {torch.get_num_threads()} thread(s); {"real models" if a.real else f"random configs: vision {a.layers} layers x {a.width}, {a.size}px"}; '
          f'{a.images} images in batches of {a.batch}; median of {a.repeats}')
    print(f'{"family":<14} {"phoalign img/s":>15} {"library img/s":>14} {"overhead ratio":>15} {"encode_images files img/s":>26}')
    for r in rows: print(f'{r["family"]:<14} {r["phoalign"]:>15.1f} {r["library"]:>14.1f} {r["ratio"]:>15.3f} {r["files"]:>26.1f}')
    for r in text_rows: print(f'{r["family"]:<14} {r["phoalign"]:>15.1f} {r["library"]:>14.1f} {r["ratio"]:>15.3f} {"(texts/s)":>26}')

if __name__ == '__main__': main()
