from twisted.application.service import ServiceMaker

ivr = ServiceMaker(
    "ivrproto",
    "ivrproto.tap",
    "Personalized IVR menus over the Genesys Cloud Call Control API",
    "ivr",
)
