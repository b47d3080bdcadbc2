from finerank import analysis


def test_english_lowercases_drops_stopwords_and_stems():
    assert analysis.english("The Running dogs are running in THE parks") == ["run", "dog", "run", "park"]
    assert analysis.english("studies of vitamin-D supplementation") == ["studi", "vitamin", "d", "supplement"]


def test_chinese_segments_words_and_drops_punctuation():
    terms = analysis.chinese("感冒的治疗方法包括休息和补水。")
    assert {"感冒", "治疗", "方法", "休息", "补水"} <= set(terms)
    assert "的" not in terms and "。" not in terms and "和" not in terms


def test_auto_mixes_chinese_segmentation_and_english_stemming():
    terms = analysis.auto("如何用Python读取CSV文件？Reading files")
    assert {"python", "csv", "读取", "文件", "read", "file"} <= set(terms)
    assert "如何" not in terms
    text = "Vitamin D supplementation reduces fractures"
    assert analysis.auto(text) == analysis.english(text)


def test_traditional_and_simplified_chinese_meet_in_bm25():
    from finerank import BM25, Document, Index

    assert analysis.chinese("感冒怎麼治療") == analysis.chinese("感冒怎么治疗")
    assert analysis.auto("DNA 序列與基因") == analysis.auto("DNA 序列与基因")
    index = Index.build([Document("s", "感冒的治疗方法：多休息"), Document("t", "電腦網絡的歷史"), Document("x", "绿茶的制作")])
    assert BM25(index).search("治療感冒", 1)[0].id == "s" and BM25(index).search("电脑网络", 1)[0].id == "t"


def test_an_index_built_before_conversion_keeps_its_analysis():
    old = {"analyzer": "auto"}  # no analyzer_version: built by an earlier finerank
    assert analysis.analyzer_of(old) is analysis.auto_v1
    assert analysis.analyzer_of({"analyzer": "auto", "analyzer_version": analysis.ANALYZER_VERSION}) is analysis.auto
    assert analysis.analyzer_of({"analyzer": "english"}) is analysis.english
