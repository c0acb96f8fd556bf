"""The built-in offline horoscope generator.

It is the default (``HOROSCOPE_GENERATOR=template``) and the fallback of the LLM generator, so it
must never fail, never need the network, and give the same text for the same (sign, date, lang):
the text is cached and stored, and a restart or a second bot instance must agree with it. The
seed therefore comes from a stable hash (``hashlib``), never from ``hash()``, which is salted per
process.

The texts are assembled from phrase banks: each section picks a situation and a piece of advice,
with the sign's planet, element and strongest trait woven in, so two signs on one day (and one
sign on two days) read differently. The Russian banks are written so that the inserted words
never need gender agreement with the reader (the reader is always addressed as «вы»).

A text names no day relative to the reader ("today", "tomorrow", "tonight", «сегодня»,
«завтра», «этим вечером»): it is generated and cached once per (sign, date, lang) and read on
two different days, as "tomorrow" on the day before and as "today" on the day itself. Only the
caption the bot composes when it sends the text says which of the two it is. Where a sentence
needs to point at its day it names the weekday of ``date`` ("this Friday", «в эту пятницу»),
which is right on both days.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass

from db.types import GeneratedHoroscope, Lang, Sign

__all__ = ["MAX_LENGTH", "MIN_LENGTH", "SECTION_LABELS", "TemplateGenerator", "sign_title"]

MIN_LENGTH = 300
MAX_LENGTH = 900

# Bump when the banks change meaningfully: stored texts are keyed by (sign, date, lang) only, so
# old dates keep their stored text and only new ones use the new banks. v2: no relative days.
_SEED_VERSION = "v2"


@dataclass(frozen=True, slots=True)
class _SignWords:
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
_QUALITIES_RU: dict[str, tuple[tuple[str, str], ...]] = {
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

_QUALITIES_EN: dict[str, tuple[str, ...]] = {
    "fire": ("your inner fire", "your natural courage", "your vitality"),
    "earth": ("your steady, grounded nature", "your practical sense", "your common sense"),
    "air": ("your quick mind", "your lightness of thought", "your gift for conversation"),
    "water": ("your deep intuition", "your sensitivity to people", "your emotional wisdom"),
}

_SIGNS_RU: dict[Sign, _SignWords] = {
    Sign.ARIES: _SignWords(
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
    Sign.TAURUS: _SignWords(
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
    Sign.GEMINI: _SignWords(
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
    Sign.CANCER: _SignWords(
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
    Sign.LEO: _SignWords(
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
    Sign.VIRGO: _SignWords(
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
    Sign.LIBRA: _SignWords(
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
    Sign.SCORPIO: _SignWords(
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
    Sign.SAGITTARIUS: _SignWords(
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
    Sign.CAPRICORN: _SignWords(
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
    Sign.AQUARIUS: _SignWords(
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
    Sign.PISCES: _SignWords(
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

_SIGNS_EN: dict[Sign, _SignWords] = {
    Sign.ARIES: _SignWords(
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
    Sign.TAURUS: _SignWords(
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
    Sign.GEMINI: _SignWords(
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
    Sign.CANCER: _SignWords(
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
    Sign.LEO: _SignWords(
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
    Sign.VIRGO: _SignWords(
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
    Sign.LIBRA: _SignWords(
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
    Sign.SCORPIO: _SignWords(
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
    Sign.SAGITTARIUS: _SignWords(
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
    Sign.CAPRICORN: _SignWords(
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
    Sign.AQUARIUS: _SignWords(
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
    Sign.PISCES: _SignWords(
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

_WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# (nominative phrase, "in/on" phrase) — the gender of the weekday decides этот/эта/это.
_WEEKDAYS_RU = (
    ("этот понедельник", "в этот понедельник"),
    ("этот вторник", "в этот вторник"),
    ("эта среда", "в эту среду"),
    ("этот четверг", "в этот четверг"),
    ("эта пятница", "в эту пятницу"),
    ("эта суббота", "в эту субботу"),
    ("это воскресенье", "в это воскресенье"),
)

# Same index in both lists: the lucky colour of a (sign, date) is the same in ru and en.
_COLOURS_EN = (
    "crimson", "coral", "amber", "golden yellow", "olive green", "emerald", "mint", "turquoise",
    "sky blue", "cobalt blue", "navy blue", "lavender", "violet", "plum", "rose pink", "peach",
    "milky white", "silver", "pearl grey", "chocolate brown", "terracotta", "burgundy",
    "aquamarine", "lilac",
)  # fmt: skip
_COLOURS_RU = (
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

# --- English phrase banks -----------------------------------------------------------------------

_DAY_EN = (
    "{planet} sets a brisk pace, and you will feel it from the first hour.",
    "This {weekday} opens more doors than it closes, as long as you knock on the right ones.",
    "The sky favours the {element} signs this {weekday}, and others easily notice your {trait}.",
    "A quiet morning gives way to a lively afternoon full of small surprises.",
    "Something you put off earlier asks for attention again, and this time it is easier to handle.",
    "{planet} lends you a clear head: decisions that felt heavy become simple.",
    "The day has a gentle rhythm, and you do not need to rush to keep up with it.",
    "Old plans may suddenly make sense in a new light.",
    "{weekday} rewards curiosity, so ask one more question than usual.",
    "The stars line up in your favour, though they expect a little effort in return.",
    "Your mood is steadier than that of the people around you, and that is an advantage.",
    "A chance conversation may turn out to be the most useful event of the day.",
    "With {planet} on your side, it is a better day to start things than to finish them.",
    "The energy of {element} runs strong in you this {weekday}, so trust your first impulse.",
    "The day unfolds slowly at first and then all at once.",
    "It is one of those days when small details decide big outcomes.",
    "Your intuition is sharper than usual, so notice what you notice.",
    "Others look to you for direction, even if they do not say it aloud.",
    "A pleasant piece of news may arrive from an unexpected direction.",
    "{planet} softens the usual tensions, making this a calm and productive day.",
    "The day invites you to tie up loose ends before reaching for new goals.",
    "You may feel a pull towards change; let it guide you, not hurry you.",
)
_DAY_TIP_EN = (
    "Lean on {quality} and you will get further than you expect.",
    "Make one decision you have been avoiding; the relief will be worth it.",
    "Keep your plans flexible and leave room for a pleasant detour.",
    "Your {trait} is the best tool you have, so do not keep it to yourself.",
    "Write down the idea that comes to you in the afternoon; it is worth keeping.",
    "Say yes to the invitation you would normally decline.",
    "Finish what you start before you open a new front.",
    "A short walk in the evening will help everything settle into place.",
    "Let {quality} set the tone, and the rest of the day will follow.",
    "Do not argue over trifles; save your energy for what truly matters.",
    "Trust the plan you made, but check the details twice.",
    "Give yourself a small reward once the main task is done.",
    "Listen more than you speak, and you will learn something valuable.",
    "Choose one priority and let the others wait their turn.",
    "Be generous with praise; it comes back to you sooner than you think.",
    "Pause for a moment before you answer anything important.",
    "Keep a promise, even a small one, and your day will feel lighter.",
    "Try a different route, literally or figuratively, and see what you find.",
    "Ask for help where you need it; people are glad to offer it.",
    "Let go of one worry that is not yours to carry.",
)
_LOVE_EN = (
    "In love, honesty works better than hints.",
    "Someone close to you is waiting for a small sign of attention.",
    "{planet} warms your heart, and conversations with your partner flow easily.",
    "If you are single, a new acquaintance may prove more interesting than it first seems.",
    "A shared memory brings you and your partner closer in the evening.",
    "Feelings run deeper than words, so pay attention to gestures.",
    "An old misunderstanding can finally be cleared up with one calm conversation.",
    "Romance prefers simplicity: a walk, a call, a cup of tea together.",
    "Your charm is hard to miss, and someone has certainly noticed it.",
    "Doubt may whisper in your ear, but the facts are on your side.",
    "The evening favours tender words and unhurried plans.",
    "Family ties feel especially warm, and a relative may share good news.",
    "If you have been waiting for the right moment to speak your heart, it is close.",
    "Your {trait} helps you understand your partner without many words.",
    "A message from someone in your past may stir a few memories; treat them kindly.",
    "Love grows from small, reliable things rather than grand gestures.",
    "Do not try to guess what your partner feels; simply ask.",
    "A friendship may quietly turn into something more.",
)
_LOVE_TIP_EN = (
    "Plan something small but personal for the evening.",
    "Give the other person room to speak before you reply.",
    "A compliment costs nothing and means a great deal.",
    "Keep your expectations light and your heart open.",
    "Say what you feel plainly; clarity is romantic too.",
    "Let the past stay in the past and enjoy what you have.",
    "Share a laugh; it will do more than a long talk.",
    "Put the phone away during dinner and be fully present.",
    "A handwritten note or a small surprise will land well.",
    "Be patient: good things in love are taking shape slowly.",
    "Forgive a small slip and you will both feel lighter.",
    "Let {quality} show in the way you care for others.",
    "Make room in your schedule for the people you love.",
    "Listen to your heart, but let your head check the map.",
    "Accept affection without looking for a catch.",
    "Ask a question you have never asked before.",
)
_WORK_EN = (
    "At work, your ideas find a receptive audience.",
    "A task that seemed routine reveals an interesting twist.",
    "{planet} favours negotiations, agreements and signatures.",
    "Colleagues value your {trait} more than they usually admit.",
    "Money matters look stable, though a small unexpected expense is possible.",
    "A project you care about moves forward, even if slowly.",
    "The first half of the day is best for focused, solitary work.",
    "You may receive a proposal that deserves careful thought rather than a quick answer.",
    "Someone in charge is paying attention to the quality of your work.",
    "Teamwork goes smoothly if roles are clear from the start.",
    "It is a good day to plan the budget and check the numbers.",
    "A deadline looks tighter than it is; steady work will get you there.",
    "Your practical sense helps you spot a mistake before it becomes costly.",
    "Learning something new at work pays off sooner than you expect.",
    "An old contact may bring a fresh opportunity.",
    "Financial luck favours careful choices over bold bets.",
    "Meetings are productive when you come with a clear question.",
    "With {planet} supporting you, it is easier to defend your point of view.",
)
_WORK_TIP_EN = (
    "Put the important things first and do not let the small ones crowd them out.",
    "Postpone large purchases for a few days.",
    "Keep notes; they will be useful sooner than you think.",
    "Share credit generously and you will gain an ally.",
    "Read the fine print before you agree to anything.",
    "Ask for feedback; it will sharpen your next step.",
    "Do not take on more than you can finish well.",
    "Set aside part of your income, however small.",
    "Use {quality} to break a stubborn problem into simple steps.",
    "Avoid gossip at work and stay with the facts.",
    "A short break in the middle of the day will raise your productivity.",
    "Put your proposal in writing; it will carry more weight.",
    "Be the one who brings calm to a busy meeting.",
    "End the day by picking the first task for the next morning.",
    "Trust your experience over the loudest opinion in the room.",
    "Invest time rather than money in your idea at this stage.",
)
_HEALTH_EN = (
    "Your energy is high in the morning and dips a little by evening.",
    "Your body asks for movement: a walk or light exercise will do wonders.",
    "Mind your posture and take short pauses from the screen.",
    "A good night's sleep is your best medicine.",
    "{planet} encourages balance, so avoid extremes in food and effort.",
    "A little stress may show up as tension in the shoulders.",
    "Fresh air and water help more than strong coffee.",
    "Your mood and well-being are closely linked, so look after both.",
    "It is a good day to start a healthy habit, however small.",
    "You may feel a burst of energy around midday; use it well.",
    "Light, simple meals suit you best.",
    "The {element} in you needs an outlet: sport, dancing or a brisk walk.",
    "Rest is not a waste of time; it is part of the work.",
    "Your nerves need some quiet, so keep the evening calm.",
    "Stretching in the morning sets a good tone for the whole day.",
    "A warm drink and an early night will restore your strength.",
)
_HEALTH_TIP_EN = (
    "Go to bed a little earlier than usual.",
    "Drink more water than you think you need.",
    "Spend at least half an hour outdoors.",
    "Give your eyes a rest every hour.",
    "Choose vegetables and fruit over sweets.",
    "Breathe slowly for a minute whenever you feel rushed.",
    "Take the stairs instead of the lift.",
    "Avoid heavy food late in the evening.",
    "A warm shower will ease the tension of the day.",
    "Put the phone away an hour before sleep.",
    "Listen to your body and do not ignore small signals.",
    "Make time for a hobby that relaxes you.",
)

# --- Russian phrase banks -----------------------------------------------------------------------

_DAY_RU = (
    "{planet} задаёт бодрый темп, и вы почувствуете его с самого утра.",
    "{weekday} открывает больше дверей, чем закрывает, — главное, стучаться в нужные.",
    "Небо благоволит знакам стихии {element_gen}, и ваша сильная сторона — {trait} — заметна всем.",
    "Тихое утро сменится оживлённым днём, полным маленьких сюрпризов.",
    "Дело, которое вы когда-то отложили, снова просит внимания, и на этот раз оно пойдёт легче.",
    "{planet} дарит вам ясную голову: решения, казавшиеся тяжёлыми, становятся простыми.",
    "У дня мягкий ритм, и спешить, чтобы успеть за ним, не придётся.",
    "Старые планы могут неожиданно предстать в новом свете.",
    "{weekday_in} любопытство вознаграждается: задайте на один вопрос больше, чем обычно.",
    "Звёзды складываются в вашу пользу, хотя и ждут от вас немного усилий.",
    "Ваше настроение устойчивее, чем у окружающих, и это настоящее преимущество.",
    "Случайный разговор может оказаться самым полезным событием дня.",
    "Благодаря {planet_dat} удачнее начинать новое, чем подводить итоги.",
    "{weekday_in} энергия стихии {element_gen} в вас особенно сильна, поэтому доверяйте первому"
    " порыву.",
    "День будет разворачиваться сначала неторопливо, а потом всё случится разом.",
    "Это один из тех дней, когда мелочи решают многое.",
    "Интуиция острее обычного — прислушайтесь к тому, что замечаете.",
    "Окружающие ждут от вас направления, даже если не говорят об этом вслух.",
    "Приятная новость может прийти с неожиданной стороны.",
    "{planet} смягчает привычное напряжение, и день обещает быть спокойным и продуктивным.",
    "День располагает к тому, чтобы закончить начатое, прежде чем браться за новые цели.",
    "Вас может потянуть к переменам: пусть это чувство ведёт вас, но не подгоняет.",
)
_DAY_TIP_RU = (
    "Опирайтесь на {quality_acc} — и вы продвинетесь дальше, чем ожидаете.",
    "Примите одно решение, которое давно откладывали, — облегчение того стоит.",
    "Оставьте в планах место для приятной неожиданности.",
    "Ваш главный инструмент — {trait}, пользуйтесь им щедро.",
    "Запишите идею, которая придёт после обеда: она того стоит.",
    "Скажите «да» приглашению, от которого обычно отказались бы.",
    "Доведите начатое до конца, прежде чем открывать новый фронт работ.",
    "Короткая вечерняя прогулка поможет всему встать на свои места.",
    "Пусть {quality} задаёт тон — остальное приложится.",
    "Не спорьте по пустякам: берегите силы для действительно важного.",
    "Доверяйте своему плану, но проверьте детали дважды.",
    "Порадуйте себя чем-нибудь приятным, когда справитесь с главной задачей.",
    "Слушайте больше, чем говорите, — и узнаете что-то ценное.",
    "Выберите один приоритет, а остальное пусть подождёт своей очереди.",
    "Не скупитесь на похвалу: она вернётся к вам быстрее, чем кажется.",
    "Прежде чем ответить на что-то важное, возьмите небольшую паузу.",
    "Сдержите обещание, пусть даже маленькое, — и день станет легче.",
    "Попробуйте новый маршрут, в прямом или переносном смысле, и посмотрите, что из этого выйдет.",
    "Просите помощи там, где она нужна: её охотно предложат.",
    "Отпустите тревогу, которую вам не нужно нести.",
)
_LOVE_RU = (
    "В любви честность работает лучше намёков.",
    "Близкий человек ждёт от вас маленького знака внимания.",
    "{planet} согревает сердце, и разговоры с партнёром складываются легко.",
    "Если вы одиноки, новое знакомство может оказаться интереснее, чем кажется на первый взгляд.",
    "Вечером вас с партнёром сблизит общее воспоминание.",
    "Чувства глубже слов, поэтому обращайте внимание на жесты.",
    "Старое недоразумение наконец можно прояснить одним спокойным разговором.",
    "Романтика любит простоту: прогулку, звонок, чай вдвоём.",
    "Ваше обаяние трудно не заметить, и кто-то его уже точно заметил.",
    "Сомнения могут нашёптывать своё, но факты на вашей стороне.",
    "Вечер благоприятен для нежных слов и неспешных планов.",
    "Семейные связи особенно тёплые, и кто-то из родных может поделиться хорошей новостью.",
    "Если вы ждали подходящего момента, чтобы открыть сердце, он уже близко.",
    "{trait} помогает вам понимать партнёра без лишних слов.",
    "Весточка из прошлого может всколыхнуть воспоминания — отнеситесь к ним бережно.",
    "Любовь растёт из мелочей, а не из громких жестов.",
    "Не пытайтесь угадать чувства партнёра — просто спросите.",
    "Дружба может незаметно перерасти в нечто большее.",
)
_LOVE_TIP_RU = (
    "Запланируйте на вечер что-нибудь небольшое, но личное.",
    "Дайте собеседнику договорить, прежде чем отвечать.",
    "Комплимент ничего не стоит, но значит очень многое.",
    "Держите ожидания лёгкими, а сердце открытым.",
    "Говорите о чувствах прямо: ясность тоже бывает романтичной.",
    "Оставьте прошлое в прошлом и радуйтесь тому, что у вас есть.",
    "Посмейтесь вместе — это сделает больше, чем долгий разговор.",
    "Отложите телефон за ужином и будьте по-настоящему рядом.",
    "Записка от руки или маленький сюрприз придутся очень кстати.",
    "Наберитесь терпения: хорошее в любви складывается постепенно.",
    "Простите маленький промах — и обоим станет легче.",
    "Пусть {quality} проявится в вашей заботе о близких.",
    "Найдите в расписании время для тех, кого любите.",
    "Слушайте сердце, но сверяйтесь с доводами разума.",
    "Принимайте нежность, не ища в ней подвоха.",
    "Задайте вопрос, который никогда раньше не задавали.",
)
_WORK_RU = (
    "На работе ваши идеи найдут внимательных слушателей.",
    "Задача, казавшаяся рутинной, сделает интересный поворот.",
    "{planet} благоволит переговорам, договорённостям и подписанию бумаг.",
    "Коллеги ценят в вас {trait_acc} больше, чем обычно признают.",
    "С деньгами всё стабильно, хотя возможен небольшой непредвиденный расход.",
    "Важный для вас проект движется вперёд, пусть и медленно.",
    "Первая половина дня лучше всего подходит для сосредоточенной работы в одиночку.",
    "Вам могут сделать предложение, которое заслуживает обдумывания, а не быстрого ответа.",
    "Руководство обращает внимание на качество вашей работы.",
    "Командная работа пойдёт гладко, если с самого начала распределить роли.",
    "Хороший день, чтобы спланировать бюджет и перепроверить цифры.",
    "Срок кажется жёстче, чем есть на самом деле: размеренная работа приведёт к цели.",
    "Практическая смекалка поможет заметить ошибку до того, как она дорого обойдётся.",
    "Новые знания в работе окупятся быстрее, чем вы ожидаете.",
    "Старый знакомый может принести свежую возможность.",
    "Финансовая удача на стороне взвешенных решений, а не рискованных ставок.",
    "Встречи будут продуктивными, если прийти на них с чётким вопросом.",
    "При поддержке {planet_gen} вам проще отстоять свою точку зрения.",
)
_WORK_TIP_RU = (
    "Начните с главного и не позволяйте мелочам его вытеснить.",
    "Отложите крупные покупки на несколько дней.",
    "Делайте заметки — они пригодятся раньше, чем кажется.",
    "Щедро делитесь заслугами, и у вас появится союзник.",
    "Прежде чем соглашаться, прочитайте всё, что написано мелким шрифтом.",
    "Попросите обратную связь — она сделает следующий шаг точнее.",
    "Не берите на себя больше, чем сможете сделать хорошо.",
    "Отложите часть дохода, пусть даже небольшую.",
    "{quality} поможет разложить упрямую задачу на простые шаги.",
    "Избегайте сплетен на работе и держитесь фактов.",
    "Короткий перерыв в середине дня повысит вашу продуктивность.",
    "Изложите своё предложение письменно — так оно будет весомее.",
    "Внесите спокойствие в суетливое совещание — это запомнят.",
    "Завершите день, наметив первую задачу на следующее утро.",
    "Доверяйте своему опыту больше, чем самому громкому мнению в комнате.",
    "На этом этапе вкладывайте в свою идею время, а не деньги.",
)
_HEALTH_RU = (
    "Утром энергии много, а к вечеру она немного спадёт.",
    "Тело просит движения: прогулка или лёгкая зарядка сотворят чудеса.",
    "Следите за осанкой и делайте короткие перерывы от экрана.",
    "Крепкий сон — ваше лучшее лекарство.",
    "{planet} призывает к равновесию: избегайте крайностей в еде и нагрузках.",
    "Небольшой стресс может отозваться напряжением в плечах.",
    "Свежий воздух и вода помогут больше, чем крепкий кофе.",
    "Настроение и самочувствие тесно связаны, так что берегите и то, и другое.",
    "Хороший день, чтобы завести полезную привычку, пусть даже совсем маленькую.",
    "Около полудня может прийти прилив сил — используйте его с толком.",
    "Лёгкая и простая еда подойдёт вам лучше всего.",
    "Стихии {element_gen} в вас нужен выход: спорт, танцы или быстрая прогулка.",
    "Отдых — не потеря времени, а часть работы.",
    "Нервам нужна тишина, поэтому сделайте вечер спокойным.",
    "Утренняя растяжка задаст хороший тон всему дню.",
    "Тёплый напиток и ранний отход ко сну восстановят силы.",
)
_HEALTH_TIP_RU = (
    "Ложитесь спать чуть раньше обычного.",
    "Пейте больше воды, чем кажется нужным.",
    "Проведите на свежем воздухе хотя бы полчаса.",
    "Давайте глазам отдых каждый час.",
    "Выбирайте овощи и фрукты вместо сладкого.",
    "Когда чувствуете спешку, подышите медленно хотя бы минуту.",
    "Поднимайтесь по лестнице вместо лифта.",
    "Избегайте тяжёлой еды поздно вечером.",
    "Тёплый душ снимет напряжение дня.",
    "Уберите телефон за час до сна.",
    "Прислушивайтесь к телу и не игнорируйте мелкие сигналы.",
    "Найдите время для хобби, которое вас расслабляет.",
)

_BANKS: dict[Lang, tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]] = {
    Lang.EN: (
        (_DAY_EN, _DAY_TIP_EN),
        (_LOVE_EN, _LOVE_TIP_EN),
        (_WORK_EN, _WORK_TIP_EN),
        (_HEALTH_EN, _HEALTH_TIP_EN),
    ),
    Lang.RU: (
        (_DAY_RU, _DAY_TIP_RU),
        (_LOVE_RU, _LOVE_TIP_RU),
        (_WORK_RU, _WORK_TIP_RU),
        (_HEALTH_RU, _HEALTH_TIP_RU),
    ),
}


def sign_title(sign: Sign, lang: Lang) -> str:
    """The sign's display name in ``lang`` ("Овен", "Aries"); the LLM prompt uses it too."""
    return (_SIGNS_RU if lang is Lang.RU else _SIGNS_EN)[sign].title


def _seed(*parts: str) -> int:
    """A process-independent seed: ``hash()`` is salted per process, sha256 is not."""
    digest = hashlib.sha256("|".join((_SEED_VERSION, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _capitalize(sentence: str) -> str:
    """Upper-case the first letter only (``str.capitalize`` would lower-case "Mars")."""
    return sentence[:1].upper() + sentence[1:]


def _fill_words(sign: Sign, date: dt.date, lang: Lang, rng: random.Random) -> dict[str, str]:
    """The placeholder values for one text; the element quality varies from day to day."""
    weekday = date.weekday()
    if lang is Lang.RU:
        ru = _SIGNS_RU[sign]
        quality, quality_acc = rng.choice(_QUALITIES_RU[ru.element])
        weekday_nom, weekday_in = _WEEKDAYS_RU[weekday]
        return {
            "planet": ru.planet,
            "planet_gen": ru.planet_gen,
            "planet_dat": ru.planet_dat,
            "element_gen": ru.element_gen,
            "trait": ru.trait,
            "trait_acc": ru.trait_acc,
            "quality": quality,
            "quality_acc": quality_acc,
            "weekday": weekday_nom,
            "weekday_in": weekday_in,
        }
    en = _SIGNS_EN[sign]
    return {
        "planet": en.planet,
        "element": en.element,
        "trait": en.trait,
        "quality": rng.choice(_QUALITIES_EN[en.element]),
        "weekday": _WEEKDAYS_EN[weekday],
    }


def _render(sign: Sign, date: dt.date, lang: Lang) -> str:
    """Assemble the text; shortens itself (dropping optional sentences) to stay within bounds."""
    rng = random.Random(_seed(sign.value, date.isoformat(), lang.value))
    words = _fill_words(sign, date, lang, rng)
    signs = _SIGNS_RU if lang is Lang.RU else _SIGNS_EN
    labels = SECTION_LABELS[lang]

    # Each section: (situation, advice); the day section may also carry a sign-flavour line.
    sections: list[list[str]] = []
    for situations, tips in _BANKS[lang]:
        chosen = [rng.choice(situations), rng.choice(tips)]
        sections.append([_capitalize(s.format(**words)) for s in chosen])
    flavour = rng.choice(signs[sign].flavour)
    if rng.random() < 0.6:
        sections[0].insert(1, flavour)

    # Lucky number and colour depend on (sign, date) only, so ru and en agree on them.
    lucky = random.Random(_seed(sign.value, date.isoformat(), "lucky"))
    number = lucky.randint(1, 99)
    colour = (_COLOURS_RU if lang is Lang.RU else _COLOURS_EN)[lucky.randrange(len(_COLOURS_EN))]
    footer = f"{labels[4]} {number}. {labels[5]} {colour}."

    def assemble() -> str:
        parts = [f"{label} {' '.join(body)}" for label, body in zip(labels, sections, strict=False)]
        return "\n\n".join([*parts, footer])

    text = assemble()
    # Too long: drop advice sentences from the longest sections until it fits (never below one
    # sentence per section). Deterministic, because the order depends only on the text.
    while len(text) > MAX_LENGTH:
        candidates = [body for body in sections if len(body) > 1]
        if not candidates:
            break
        longest = max(candidates, key=lambda body: sum(map(len, body)))
        longest.pop()
        text = assemble()
    if len(text) < MIN_LENGTH and flavour not in sections[0]:
        sections[0].append(flavour)
        text = assemble()
    return text


class TemplateGenerator:
    """Offline, deterministic horoscopes in Russian and English from phrase banks.

    Free, instant and always available, which is why it is both the default generator and the
    fallback of the LLM one.
    """

    name = "template"

    async def generate(self, sign: Sign, date: dt.date, lang: Lang) -> GeneratedHoroscope:
        return GeneratedHoroscope(text=_render(sign, date, lang), generator=self.name)

    def render(self, sign: Sign, date: dt.date, lang: Lang) -> str:
        """Synchronous access for callers without an event loop (tests, scripts)."""
        return _render(sign, date, lang)
