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
