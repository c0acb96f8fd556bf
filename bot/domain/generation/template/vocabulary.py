"""What gives each sign its voice: its words in both languages (Russian in the cases the phrase
banks need), element qualities, weekdays, lucky colours and the section labels."""

from __future__ import annotations

from dataclasses import dataclass

from db.types import Lang, Sign


@dataclass(frozen=True, slots=True)
class SignWords:
    """Words that give one sign its flavour in one language (Russian needs several cases)."""

    title: str
    planet: str
    planet_gen: str
    planet_dat: str
    element: str
    element_gen: str
    trait: str
    trait_acc: str
    flavour: tuple[str, ...]


# Element qualities as (nominative, accusative); English uses the first item only.
QUALITIES_RU: dict[str, tuple[tuple[str, str], ...]] = {
    "огонь": (
        ("внутренний огонь", "внутренний огонь"),
        ("природная смелость", "природную смелость"),
        ("жизненная сила", "жизненную силу"),
    ),
    "земля": (
        ("земная основательность", "земную основательность"),
        ("практичность", "практичность"),
        ("здравый смысл", "здравый смысл"),
    ),
    "воздух": (
        ("лёгкость мышления", "лёгкость мышления"),
        ("живой ум", "живой ум"),
        ("умение договариваться", "умение договариваться"),
    ),
    "вода": (
        ("глубокая интуиция", "глубокую интуицию"),
        ("чуткость к людям", "чуткость к людям"),
        ("эмоциональная мудрость", "эмоциональную мудрость"),
    ),
}

QUALITIES_EN: dict[str, tuple[str, ...]] = {
    "fire": ("your inner fire", "your natural courage", "your vitality"),
    "earth": ("your steady, grounded nature", "your practical sense", "your common sense"),
    "air": ("your quick mind", "your lightness of thought", "your gift for conversation"),
    "water": ("your deep intuition", "your sensitivity to people", "your emotional wisdom"),
}

SIGNS_RU: dict[Sign, SignWords] = {
    Sign.ARIES: SignWords(
        "Овен",
        "Марс",
        "Марса",
        "Марсу",
        "огонь",
        "огня",
        "решительность",
        "решительность",
        (
            "Овну легче всего, когда впереди ясная цель, и этот день её даёт.",
            "Ваш природный напор помогает сдвинуть с места то, что давно стояло.",
        ),
    ),
    Sign.TAURUS: SignWords(
        "Телец",
        "Венера",
        "Венеры",
        "Венере",
        "земля",
        "земли",
        "терпение",
        "терпение",
        (
            "Тельцу особенно важны уют и предсказуемость — позаботьтесь о них.",
            "Ваше умение не торопиться окупится сполна.",
        ),
    ),
    Sign.GEMINI: SignWords(
        "Близнецы",
        "Меркурий",
        "Меркурия",
        "Меркурию",
        "воздух",
        "воздуха",
        "любознательность",
        "любознательность",
        (
            "Близнецам легко даются разговоры, переписка и новые знакомства.",
            "Ваша способность быстро переключаться выручит не раз.",
        ),
    ),
    Sign.CANCER: SignWords(
        "Рак",
        "Луна",
        "Луны",
        "Луне",
        "вода",
        "воды",
        "чуткость",
        "чуткость",
        (
            "Раку особенно важно чувствовать опору дома и в семье.",
            "Ваша забота о близких возвращается к вам теплом.",
        ),
    ),
    Sign.LEO: SignWords(
        "Лев",
        "Солнце",
        "Солнца",
        "Солнцу",
        "огонь",
        "огня",
        "щедрость",
        "щедрость",
        (
            "Льву к лицу быть в центре внимания — не прячьте свои таланты.",
            "Ваша открытость заряжает окружающих.",
        ),
    ),
    Sign.VIRGO: SignWords(
        "Дева",
        "Меркурий",
        "Меркурия",
        "Меркурию",
        "земля",
        "земли",
        "внимательность к деталям",
        "внимательность к деталям",
        (
            "Деве удаётся навести порядок там, где другие видят только хаос.",
            "Ваша аккуратность экономит время и вам, и окружающим.",
        ),
    ),
    Sign.LIBRA: SignWords(
        "Весы",
        "Венера",
        "Венеры",
        "Венере",
        "воздух",
        "воздуха",
        "чувство меры",
        "чувство меры",
        (
            "Весам удаётся найти компромисс там, где другие зашли в тупик.",
            "Ваше стремление к гармонии особенно ценно для окружающих.",
        ),
    ),
    Sign.SCORPIO: SignWords(
        "Скорпион",
        "Плутон",
        "Плутона",
        "Плутону",
        "вода",
        "воды",
        "проницательность",
        "проницательность",
        (
            "Скорпион видит людей насквозь — пользуйтесь этим бережно.",
            "Ваша сила воли помогает довести до конца даже трудное дело.",
        ),
    ),
    Sign.SAGITTARIUS: SignWords(
        "Стрелец",
        "Юпитер",
        "Юпитера",
        "Юпитеру",
        "огонь",
        "огня",
        "оптимизм",
        "оптимизм",
        (
            "Стрельца тянет к новым горизонтам — хотя бы мысленно.",
            "Ваша вера в лучшее заразительна.",
        ),
    ),
    Sign.CAPRICORN: SignWords(
        "Козерог",
        "Сатурн",
        "Сатурна",
        "Сатурну",
        "земля",
        "земли",
        "упорство",
        "упорство",
        (
            "Козерогу удаётся шаг за шагом подниматься к своей вершине.",
            "Ваша дисциплина превращает планы в результат.",
        ),
    ),
    Sign.AQUARIUS: SignWords(
        "Водолей",
        "Уран",
        "Урана",
        "Урану",
        "воздух",
        "воздуха",
        "оригинальность",
        "оригинальность",
        (
            "Водолею приходят в голову идеи, до которых другие додумаются позже.",
            "Ваш свежий взгляд особенно нужен команде.",
        ),
    ),
    Sign.PISCES: SignWords(
        "Рыбы",
        "Нептун",
        "Нептуна",
        "Нептуну",
        "вода",
        "воды",
        "интуиция",
        "интуицию",
        (
            "Рыбам стоит доверять снам и предчувствиям.",
            "Ваше воображение подскажет решение, которого нет в инструкциях.",
        ),
    ),
}

SIGNS_EN: dict[Sign, SignWords] = {
    Sign.ARIES: SignWords(
        "Aries",
        "Mars",
        "",
        "",
        "fire",
        "",
        "decisiveness",
        "",
        (
            "Aries thrives with a clear goal ahead, and the day brings one.",
            "Your natural drive helps you move things that have been stuck for a while.",
        ),
    ),
    Sign.TAURUS: SignWords(
        "Taurus",
        "Venus",
        "",
        "",
        "earth",
        "",
        "patience",
        "",
        (
            "Taurus feels best with comfort and a predictable rhythm, so make room for both.",
            "Your refusal to be rushed pays off handsomely.",
        ),
    ),
    Sign.GEMINI: SignWords(
        "Gemini",
        "Mercury",
        "",
        "",
        "air",
        "",
        "curiosity",
        "",
        (
            "Conversations, messages and new acquaintances come easily to Gemini.",
            "Your ability to switch gears quickly will save the day more than once.",
        ),
    ),
    Sign.CANCER: SignWords(
        "Cancer",
        "the Moon",
        "",
        "",
        "water",
        "",
        "sensitivity",
        "",
        (
            "Cancer needs a firm footing at home, and you can build it.",
            "The care you give to those close to you comes back as warmth.",
        ),
    ),
    Sign.LEO: SignWords(
        "Leo",
        "the Sun",
        "",
        "",
        "fire",
        "",
        "generosity",
        "",
        (
            "The spotlight suits Leo, so do not hide your talents.",
            "Your openness gives energy to everyone around you.",
        ),
    ),
    Sign.VIRGO: SignWords(
        "Virgo",
        "Mercury",
        "",
        "",
        "earth",
        "",
        "eye for detail",
        "",
        (
            "Virgo brings order where others see only chaos.",
            "Your precision saves time for you and for everyone around you.",
        ),
    ),
    Sign.LIBRA: SignWords(
        "Libra",
        "Venus",
        "",
        "",
        "air",
        "",
        "sense of balance",
        "",
        (
            "Libra finds a compromise where others have reached a dead end.",
            "Your wish for harmony is especially valuable to the people around you.",
        ),
    ),
    Sign.SCORPIO: SignWords(
        "Scorpio",
        "Pluto",
        "",
        "",
        "water",
        "",
        "insight",
        "",
        (
            "Scorpio sees right through people, so use that gift gently.",
            "Your willpower helps you finish even a difficult task.",
        ),
    ),
    Sign.SAGITTARIUS: SignWords(
        "Sagittarius",
        "Jupiter",
        "",
        "",
        "fire",
        "",
        "optimism",
        "",
        (
            "Sagittarius feels the pull of new horizons, if only in thought.",
            "Your faith in the best outcome is contagious.",
        ),
    ),
    Sign.CAPRICORN: SignWords(
        "Capricorn",
        "Saturn",
        "",
        "",
        "earth",
        "",
        "persistence",
        "",
        (
            "Capricorn climbs towards the summit step by step.",
            "Your discipline turns plans into results.",
        ),
    ),
    Sign.AQUARIUS: SignWords(
        "Aquarius",
        "Uranus",
        "",
        "",
        "air",
        "",
        "originality",
        "",
        (
            "Aquarius has ideas that others will only arrive at later.",
            "Your fresh point of view is exactly what the team needs.",
        ),
    ),
    Sign.PISCES: SignWords(
        "Pisces",
        "Neptune",
        "",
        "",
        "water",
        "",
        "intuition",
        "",
        (
            "Pisces should trust dreams and hunches.",
            "Your imagination finds a solution that no manual contains.",
        ),
    ),
}

WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# (nominative phrase, "in/on" phrase) — the gender of the weekday decides этот/эта/это.
WEEKDAYS_RU = (
    ("этот понедельник", "в этот понедельник"),
    ("этот вторник", "в этот вторник"),
    ("эта среда", "в эту среду"),
    ("этот четверг", "в этот четверг"),
    ("эта пятница", "в эту пятницу"),
    ("эта суббота", "в эту субботу"),
    ("это воскресенье", "в это воскресенье"),
)

# Same index in both lists: the lucky colour of a (sign, date) is the same in ru and en.
COLOURS_EN = (
    "crimson", "coral", "amber", "golden yellow", "olive green", "emerald", "mint", "turquoise",
    "sky blue", "cobalt blue", "navy blue", "lavender", "violet", "plum", "rose pink", "peach",
    "milky white", "silver", "pearl grey", "chocolate brown", "terracotta", "burgundy",
    "aquamarine", "lilac",
)  # fmt: skip
COLOURS_RU = (
    "малиновый", "коралловый", "янтарный", "золотисто-жёлтый", "оливковый", "изумрудный",
    "мятный", "бирюзовый", "небесно-голубой", "кобальтовый", "тёмно-синий", "лавандовый",
    "фиолетовый", "сливовый", "розовый", "персиковый", "молочно-белый", "серебристый",
    "жемчужно-серый", "шоколадный", "терракотовый", "бордовый", "аквамариновый", "сиреневый",
)  # fmt: skip

SECTION_LABELS: dict[Lang, tuple[str, str, str, str, str, str]] = {
    Lang.EN: ("Overall:", "Love:", "Work and money:", "Health:", "Lucky number:", "Lucky colour:"),
    Lang.RU: (
        "В целом:",
        "Любовь:",
        "Работа и деньги:",
        "Здоровье:",
        "Счастливое число:",
        "Цвет удачи:",
    ),
}
