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
    index = Index.build(
        [Document("s", "感冒的治疗方法：多休息"), Document("t", "電腦網絡的歷史"), Document("x", "绿茶的制作")]
    )
    assert BM25(index).search("治療感冒", 1)[0].id == "s" and BM25(index).search("电脑网络", 1)[0].id == "t"


def test_an_index_keeps_the_analysis_of_the_version_it_was_built_with():
    old = {"analyzer": "auto"}  # no analyzer_version: built by an earlier finerank
    assert analysis.analyzer_of(old) is analysis.auto_v1
    assert analysis.analyzer_of({"analyzer": "auto", "analyzer_version": 2}) is analysis.auto_v2
    assert analysis.analyzer_of({"analyzer": "auto", "analyzer_version": analysis.ANALYZER_VERSION}) is analysis.auto
    assert analysis.analyzer_of({"analyzer": "english"}) is analysis.ANALYZERS["english"]
    russian = "Как называется столица России?"
    assert analysis.auto_v2(russian) == ["как", "называется", "столица", "россии"]  # version 2 read it as English
    assert analysis.auto(russian) == ["как", "называ", "столиц", "росс"]


def test_each_language_is_identified_and_analysed_in_its_own_way():
    cases = {
        "Как называется столица России и где она находится?": ("ru", ["называ", "столиц", "росс"]),
        "ما هي عاصمة المملكة العربية السعودية؟": ("ar", ["عاصم", "مملك"]),
        "भारत की राजधानी कहाँ स्थित है?": ("hi", ["भारत", "राजधान"]),  # vowel signs stay inside their word
        "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας": ("el", ["αθην", "πρωτευ"]),
        "Die Hauptstädte der europäischen Länder": ("de", ["hauptstadt", "europa", "land"]),
        "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย": ("th", ["กรุงเทพมหานคร", "เมือง", "ประเทศไทย"]),  # no spaces: ICU's words
        "東京都に住んでいる人々は日本語を話します": ("ja", ["東京", "日本語"]),
        "서울은 한국의 수도입니다": ("ko", ["서울", "한국", "수도"]),  # Hangul bigrams: particles do not hide the word
        "Vitamin D supplementation reduces fractures": ("en", ["vitamin", "supplement", "fractur"]),
    }
    for text, (lang, expected) in cases.items():
        assert analysis.language(text) == lang, text
        assert set(expected) <= set(analysis.auto(text)), (text, analysis.auto(text))
    assert analysis.language("12345 !!") == analysis.UNDETERMINED


def test_a_query_takes_the_likeliest_language_the_index_holds():
    from finerank import Document, Index

    assert analysis.language("bone fractures") == "eo"  # too short to tell on its own: fastText guesses Esperanto
    assert (
        analysis.language("bone fractures", among={"en": 990, "eo": 10}) == "en"
    )  # an index of English documents reads it as English
    index = Index.build(
        [
            Document("ru", "Москва — столица России, крупнейший город страны."),
            Document("en", "London is the capital of the United Kingdom and its largest city."),
            Document("de", "Berlin ist die Hauptstadt Deutschlands und die größte Stadt des Landes."),
        ]
    )
    assert index.params["languages"] == {"de": 1, "en": 1, "ru": 1}
    assert index.query_language("столицы России") == "ru" and index.query_language("Hauptstädte Deutschlands") == "de"
    from finerank import BM25

    assert [h.id for h in BM25(index).search("столицы", 3)] == ["ru"]  # stemmed as the Russian document was
    assert [h.id for h in BM25(index).search("Hauptstädte", 3)] == ["de"]


def test_a_corpus_reads_its_short_documents_in_its_main_language():
    english = [f"Vitamin D supplementation and the risk of fractures in study {i}" for i in range(20)]
    assert analysis.language("bone fractures") == "eo"
    assert analysis.corpus_languages(["bone fractures", *english]) == ["en"] * 21
    russian = "Москва — столица России, крупнейший город страны."
    assert analysis.corpus_languages([russian, *english])[0] == "ru"  # a clear guess stands


def test_chinese_text_with_japanese_or_korean_in_it_stays_chinese_in_a_chinese_corpus():
    assert (
        analysis.language("斯翁斯和蒂姆・烏爾里希斯與菲利克斯・努斯鮑姆這些藝術家都來自於？") == "zh"
    )  # "・" is no kana
    assert analysis.language("首尔（서울）是韩国的首都，也是最大的城市。") == "zh"  # a Korean name inside Chinese
    quoting = (
        "上知令，（平假名：じょうちれい、あげちれい），是指从1840年代到1870年代，江户幕府及明治政府所发出的土地没收政令"
    )
    assert analysis.language(quoting) == "ja"  # alone, this much kana reads as Japanese (CMRC has two such paragraphs)
    assert analysis.corpus_languages([quoting, *["这是一个关于历史的中文段落。"] * 20])[0] == "zh"
