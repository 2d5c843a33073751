/*
 * test_sms.c - the SMS channel's wire formats (bridge/sms.h): Twilio's
 * published signature example as a fixed vector, forms, incoming texts,
 * numbers, the lookup hash, TwiML; and the keywords (policy/chanrules.h).
 */
#include <stdlib.h>
#include <string.h>

#include "chanrules.h"
#include "sms.h"
#include "testlib.h"
#include "util.h"
#include "whatsapp.h"

static void test_twilio_published_example(void)
{
	/* twilio.com/docs/usage/security: token 12345, this URL and these
	 * parameters sign to 0/KCTR6DLpKmkAf8muzZqo1nDgQ= */
	json_t *p = json_pack("{s:s, s:s, s:s, s:s, s:s}", "CallSid", "CA1234567890ABCDE", "Caller",
	                      "+12349013030", "Digits", "1234", "From", "+12349013030", "To", "+18005551212");
	const char *url = "https://mycompany.com/myapp.php?foo=1&bar=2";
	char sig[SMS_TWILIO_SIG_LEN + 1];
	sms_twilio_sign("12345", url, p, sig);
	CHECK_STR(sig, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
	CHECK(sms_twilio_check("12345", url, p, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
	CHECK(!sms_twilio_check("12345", url, p, "0/KCTR6DLpKmkAf8muzZqo1nDgQ"));
	CHECK(!sms_twilio_check("12346", url, p, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
	CHECK(!sms_twilio_check("12345", url, p, NULL));
	CHECK(!sms_twilio_check("12345", "https://mycompany.com/myapp.php?foo=1&bar=3", p,
	                        "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
	json_object_set_new(p, "Digits", json_string("1235"));
	CHECK(!sms_twilio_check("12345", url, p, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
	json_decref(p);

	/* the same parameters decoded from a form sign the same */
	json_t *f = NULL;
	const char *form = "To=%2B18005551212&From=%2B12349013030&Digits=1234&Caller=%2B12349013030"
	                   "&CallSid=CA1234567890ABCDE";
	CHECK_EQ_INT(sms_form_parse(form, strlen(form), &f), TH_OK);
	CHECK(sms_twilio_check("12345", url, f, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="));
	json_decref(f);
}

static void test_form(void)
{
	json_t *f = NULL;
	const char *s = "a=1&b=hello+world&c=%C3%A9t%C3%A9&&d=&e&a=2";
	CHECK_EQ_INT(sms_form_parse(s, strlen(s), &f), TH_OK);
	CHECK_STR(json_string_value(json_object_get(f, "a")), "1"); /* first kept */
	CHECK_STR(json_string_value(json_object_get(f, "b")), "hello world");
	CHECK_STR(json_string_value(json_object_get(f, "c")), "été");
	CHECK_STR(json_string_value(json_object_get(f, "d")), "");
	CHECK_STR(json_string_value(json_object_get(f, "e")), "");
	json_decref(f);
	CHECK_EQ_INT(sms_form_parse("a=%4", 4, &f), TH_EINVAL);
	CHECK_EQ_INT(sms_form_parse("a=%zz", 5, &f), TH_EINVAL);
	CHECK_EQ_INT(sms_form_parse("a=%00", 5, &f), TH_EINVAL);
	CHECK_EQ_INT(sms_form_parse("a=%ff", 5, &f), TH_EINVAL); /* not UTF-8 */
	char *many = xstrdup("");
	for (int i = 0; i < SMS_MAX_FIELDS + 1; i++) {
		char *n = xasprintf("%s&k%d=v", many, i);
		free(many);
		many = n;
	}
	CHECK_EQ_INT(sms_form_parse(many, strlen(many), &f), TH_ETOOLARGE);
	free(many);
}

static void test_in_read(void)
{
	struct sms_in in;
	json_t *k = json_pack("{s:s, s:s, s:s, s:s}", "from", "+44 7700 900123", "to", "4477009", "text",
	                      "hello", "id", "a1b2-c3");
	CHECK_EQ_INT(sms_in_read(k, 0, &in), TH_OK);
	CHECK_STR(in.from, "+447700900123");
	CHECK_STR(in.to, "4477009");
	CHECK_STR(in.id, "a1b2-c3");
	CHECK_STR(in.text, "hello");
	CHECK_EQ_INT(sms_in_read(k, 1, &in), TH_EINVAL); /* Twilio's names are others */
	json_object_set_new(k, "id", json_string("a b"));
	CHECK_EQ_INT(sms_in_read(k, 0, &in), TH_EINVAL);
	json_object_del(k, "id");
	json_object_set_new(k, "from", json_string("+44abc"));
	CHECK_EQ_INT(sms_in_read(k, 0, &in), TH_EINVAL);
	json_object_set_new(k, "from", json_string("0044 7700"));
	CHECK_EQ_INT(sms_in_read(k, 0, &in), TH_OK);
	CHECK_STR(in.from, "+447700");
	char *big = xmalloc(SMS_MAX_TEXT + 2);
	memset(big, 'x', SMS_MAX_TEXT + 1);
	big[SMS_MAX_TEXT + 1] = '\0';
	json_object_set_new(k, "text", json_string(big));
	CHECK_EQ_INT(sms_in_read(k, 0, &in), TH_ETOOLARGE);
	free(big);
	json_decref(k);
	json_t *t = json_pack("{s:s, s:s, s:s, s:s}", "From", "+15005550006", "To", "+15005550001", "Body",
	                      "YES", "MessageSid", "SM0123456789abcdef");
	CHECK_EQ_INT(sms_in_read(t, 1, &in), TH_OK);
	CHECK_STR(in.id, "SM0123456789abcdef");
	json_decref(t);
}

static void test_hash_and_words(void)
{
	unsigned char k1[SMS_KEY_LEN] = {1}, k2[SMS_KEY_LEN] = {2}, a[SMS_KEY_LEN], b[SMS_KEY_LEN];
	sms_address_hash(k1, "helpline", "+447700900123", a);
	sms_address_hash(k1, "helpline", "+447700900123", b);
	CHECK(memcmp(a, b, sizeof(a)) == 0);
	sms_address_hash(k2, "helpline", "+447700900123", b);
	CHECK(memcmp(a, b, sizeof(a)) != 0); /* another server key */
	sms_address_hash(k1, "other", "+447700900123", b);
	CHECK(memcmp(a, b, sizeof(a)) != 0); /* another service */

	const char *langs[] = {"en", "fr", "es", "ar"};
	char *menu = sms_say(SMS_SAY_MENU, "en", langs, 4);
	CHECK(strstr(menu, "1 English / 2 Français / 3 Español / 4 العربية") != NULL);
	free(menu);
	char *x = sms_twiml("a < b & \"c\"");
	CHECK_STR(x,
	          "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>a &lt; b &amp; &quot;c&quot;"
	          "</Message></Response>");
	free(x);
	char *u = sms_urlencode("+44 é&=");
	CHECK_STR(u, "%2B44%20%C3%A9%26%3D");
	free(u);

	size_t li = 9;
	CHECK_EQ_INT(pol_chan_word_of(" 2 ", 4, &li), POL_CHAN_LANGNUM);
	CHECK_EQ_INT((int)li, 1);
	CHECK_EQ_INT(pol_chan_word_of("5", 4, &li), POL_CHAN_OTHER);
	CHECK_EQ_INT(pol_chan_word_of("Stop!", 4, NULL), POL_CHAN_STOP);
	CHECK_EQ_INT(pol_chan_word_of("stop it", 4, NULL), POL_CHAN_OTHER);
	CHECK_EQ_INT(pol_chan_word_of("SÍ", 4, NULL), POL_CHAN_YES);
	CHECK_EQ_INT(pol_chan_word_of("", 4, NULL), POL_CHAN_OTHER);
}

static void test_whatsapp(void)
{
	/* the vector computed independently (Python's hmac) over these exact bytes */
	const char *body = "{\"object\":\"whatsapp_business_account\",\"entry\":[]}";
	const char *good = "sha256=d3e4f9da0ce6c71ab3dba55929b8eeeee2455349e534924ead19f98d143e904f";
	char sig[72];
	wa_signature("app-secret", body, strlen(body), sig);
	CHECK_STR(sig, good);
	CHECK(wa_signature_check("app-secret", body, strlen(body), good));
	CHECK(!wa_signature_check("app-secret", body, strlen(body), NULL));
	CHECK(!wa_signature_check("other-secret", body, strlen(body), good));
	CHECK(!wa_signature_check("app-secret", body, strlen(body) - 1, good));
	CHECK(!wa_signature_check("app-secret", body, strlen(body), good + 7)); /* without "sha256=" */
	/* the same JSON written again with spaces is other bytes: refused */
	const char *again = "{\"object\": \"whatsapp_business_account\", \"entry\": []}";
	CHECK(!wa_signature_check("app-secret", again, strlen(again), good));

	char out[WA_MAX_CHALLENGE + 1];
	CHECK(wa_verify("subscribe", "vt-123", "1158201444", "vt-123", out));
	CHECK_STR(out, "1158201444");
	CHECK(!wa_verify("subscribe", "vt-124", "1158201444", "vt-123", out));
	CHECK(!wa_verify("unsubscribe", "vt-123", "1158201444", "vt-123", out));
	CHECK(!wa_verify("subscribe", NULL, "1158201444", "vt-123", out));
	CHECK(!wa_verify("subscribe", "vt-123", "<script>", "vt-123", out));
	CHECK(!wa_verify("subscribe", "", "1", "", out));
}

/* Kannel's delivery report types (its %d) as the dlr-url brings them. */
static void test_kannel_dlr(void)
{
	static const struct {
		const char *type;
		int state; /* -1: refused */
	} cases[] = {{"1", SMS_DLR_DELIVERED},
	             {"2", SMS_DLR_FAILED},
	             {"4", SMS_DLR_BUFFERED},
	             {"8", SMS_DLR_ACCEPTED},
	             {"16", SMS_DLR_FAILED},
	             {"3", -1},
	             {"0", -1},
	             {"", -1},
	             {"01", -1}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *f = json_pack("{s:s, s:s}", "id", "0123456789abcdef0123456789abcdef", "type",
		                      cases[i].type);
		char id[SMS_DLR_ID_LEN + 1];
		enum sms_dlr_state st = SMS_DLR_SENT;
		int rc = sms_kannel_dlr_read(f, id, &st);
		CHECK(cases[i].state < 0 ? rc == TH_EINVAL : rc == TH_OK && (int)st == cases[i].state);
		if (!rc)
			CHECK(strcmp(id, "0123456789abcdef0123456789abcdef") == 0);
		json_decref(f);
	}
	char id[SMS_DLR_ID_LEN + 1];
	enum sms_dlr_state st;
	const char *bad[] = {"0123456789ABCDEF0123456789abcdef", "0123456789abcdef", "../../etc/passwd"};
	for (size_t i = 0; i < 3; i++) {
		json_t *f = json_pack("{s:s, s:s}", "id", bad[i], "type", "2");
		CHECK(sms_kannel_dlr_read(f, id, &st) == TH_EINVAL);
		json_decref(f);
	}
	json_t *none = json_pack("{s:s}", "type", "1");
	CHECK(sms_kannel_dlr_read(none, id, &st) == TH_EINVAL);
	json_decref(none);
	CHECK(strcmp(sms_dlr_state_name(SMS_DLR_FAILED), "failed") == 0);
	CHECK(sms_dlr_state_from_name("delivered") == SMS_DLR_DELIVERED &&
	      sms_dlr_state_from_name("x") == -1);
}

int main(void)
{
	test_twilio_published_example();
	test_form();
	test_in_read();
	test_hash_and_words();
	test_whatsapp();
	test_kannel_dlr();
	return TEST_DONE();
}
