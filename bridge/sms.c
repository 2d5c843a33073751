/*
 * sms.c - the SMS channel's wire formats: forms, incoming texts, Twilio's
 * signature, the lookup hash, and the words sent back.
 */
#include "sms.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "util.h"

/* ---- forms ----------------------------------------------------------------- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode @p n bytes at @p s into a new string; NULL for a bad escape or a NUL. */
static char *form_decode(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			int hi = i + 1 < n ? hexval(s[i + 1]) : -1;
			int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
			if (hi < 0 || lo < 0)
				goto bad;
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		if (c == '\0')
			goto bad;
		out[o++] = c;
	}
	out[o] = '\0';
	return out;
bad:
	free(out);
	return NULL;
}

int sms_form_parse(const char *s, size_t len, json_t **out)
{
	json_t *o = json_object();
	size_t fields = 0, i = 0;
	int rc = TH_OK;
	while (i < len) {
		size_t end = i;
		while (end < len && s[end] != '&')
			end++;
		if (end > i) {
			if (++fields > SMS_MAX_FIELDS) {
				rc = TH_ETOOLARGE;
				goto fail;
			}
			size_t eq = i;
			while (eq < end && s[eq] != '=')
				eq++;
			char *name = form_decode(s + i, eq - i);
			char *value = eq < end ? form_decode(s + eq + 1, end - eq - 1) : xstrdup("");
			/* json_string refuses what is not UTF-8 */
			json_t *k = name ? json_string(name) : NULL, *v = value ? json_string(value) : NULL;
			int ok = k && v;
			if (ok && !json_object_get(o, name))
				json_object_set(o, name, v);
			json_decref(k);
			json_decref(v);
			free(name);
			free(value);
			if (!ok) {
				rc = TH_EINVAL;
				goto fail;
			}
		}
		i = end + 1;
	}
	*out = o;
	return TH_OK;
fail:
	json_decref(o);
	return rc;
}

/* ---- incoming texts ---------------------------------------------------------- */

int sms_number_norm(const char *in, char out[SMS_MAX_NUMBER])
{
	size_t o = 0, digits = 0;
	const char *p = in;
	if (!p)
		return TH_EINVAL;
	while (*p == ' ')
		p++;
	if (p[0] == '0' && p[1] == '0') {
		out[o++] = '+';
		p += 2;
	} else if (*p == '+') {
		out[o++] = '+';
		p++;
	}
	for (; *p; p++) {
		if (*p == ' ' || *p == '.' || *p == '-' || *p == '(' || *p == ')')
			continue;
		if (*p < '0' || *p > '9' || digits == 20)
			return TH_EINVAL;
		out[o++] = *p;
		digits++;
	}
	out[o] = '\0';
	return digits >= 3 ? TH_OK : TH_EINVAL;
}

static int id_ok(const char *s)
{
	for (; *s; s++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == ':' || c == '-'))
			return 0;
	}
	return 1;
}

int sms_in_read(const json_t *fields, int twilio, struct sms_in *out)
{
	const char *from = json_string_value(json_object_get(fields, twilio ? "From" : "from"));
	const char *to = json_string_value(json_object_get(fields, twilio ? "To" : "to"));
	const char *text = json_string_value(json_object_get(fields, twilio ? "Body" : "text"));
	const char *id = json_string_value(json_object_get(fields, twilio ? "MessageSid" : "id"));
	memset(out, 0, sizeof(*out));
	if (!from || !to || !text)
		return TH_EINVAL;
	if (sms_number_norm(from, out->from) || sms_number_norm(to, out->to))
		return TH_EINVAL;
	if (id && (strlen(id) > SMS_MAX_ID || !id_ok(id)))
		return TH_EINVAL;
	if (id)
		memcpy(out->id, id, strlen(id) + 1);
	size_t n = strlen(text);
	if (n > SMS_MAX_TEXT)
		return TH_ETOOLARGE;
	memcpy(out->text, text, n + 1);
	return TH_OK;
}

/* ---- delivery reports ------------------------------------------------------------ */

static const char *const dlr_names[] = {"sent", "accepted", "buffered", "delivered", "failed"};

const char *sms_dlr_state_name(enum sms_dlr_state s)
{
	return (unsigned)s < SMS_DLR_COUNT ? dlr_names[s] : NULL;
}

int sms_dlr_state_from_name(const char *name)
{
	for (int i = 0; name && i < SMS_DLR_COUNT; i++) {
		if (strcmp(name, dlr_names[i]) == 0)
			return i;
	}
	return -1;
}

int sms_kannel_dlr_read(const json_t *fields, char id[SMS_DLR_ID_LEN + 1], enum sms_dlr_state *state)
{
	const char *i = json_string_value(json_object_get(fields, "id"));
	const char *type = json_string_value(json_object_get(fields, "type"));
	if (!i || !type || strlen(i) != SMS_DLR_ID_LEN)
		return TH_EINVAL;
	for (const char *p = i; *p; p++) {
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return TH_EINVAL;
	}
	/* spec: Kannel's %d is one DLR type: 1 delivered, 2 undeliverable,
	 * 4 buffered, 8 SMSC success, 16 SMSC failure */
	enum sms_dlr_state st;
	if (strcmp(type, "1") == 0)
		st = SMS_DLR_DELIVERED;
	else if (strcmp(type, "2") == 0 || strcmp(type, "16") == 0)
		st = SMS_DLR_FAILED;
	else if (strcmp(type, "4") == 0)
		st = SMS_DLR_BUFFERED;
	else if (strcmp(type, "8") == 0)
		st = SMS_DLR_ACCEPTED;
	else
		return TH_EINVAL;
	memcpy(id, i, SMS_DLR_ID_LEN + 1);
	*state = st;
	return TH_OK;
}

/* ---- Twilio's signature -------------------------------------------------------- */

static int by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void sms_twilio_sign(const char *token, const char *url, const json_t *params, char *out)
{
	size_t n = json_object_size(params), k = 0, len = strlen(url);
	const char **names = xcalloc(n ? n : 1, sizeof(char *));
	const char *name;
	json_t *v;
	json_object_foreach((json_t *)params, name, v)
	{
		if (json_is_string(v)) {
			names[k++] = name;
			len += strlen(name) + json_string_length(v);
		}
	}
	qsort(names, k, sizeof(char *), by_name);
	char *data = xmalloc(len + 1), *p = data;
	memcpy(p, url, strlen(url));
	p += strlen(url);
	for (size_t i = 0; i < k; i++) {
		json_t *val = json_object_get(params, names[i]);
		memcpy(p, names[i], strlen(names[i]));
		p += strlen(names[i]);
		memcpy(p, json_string_value(val), json_string_length(val));
		p += json_string_length(val);
	}
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned maclen = 0;
	if (!HMAC(EVP_sha1(), token, (int)strlen(token), (const unsigned char *)data, (size_t)(p - data), mac,
	          &maclen))
		abort(); /* only an allocation failure gets here */
	EVP_EncodeBlock((unsigned char *)out, mac, (int)maclen);
	free(data);
	free(names);
}

int sms_twilio_check(const char *token, const char *url, const json_t *params, const char *header)
{
	char want[SMS_TWILIO_SIG_LEN + 1];
	if (!header || !token || !*token)
		return 0;
	sms_twilio_sign(token, url, params, want);
	return th_consttime_eq(want, strlen(want), header, strlen(header));
}

void sms_address_hash(const unsigned char key[SMS_KEY_LEN], const char *service, const char *number,
                      unsigned char out[SMS_KEY_LEN])
{
	chan_address_hash(key, "sms", service, number, out);
}

void chan_address_hash(const unsigned char key[SMS_KEY_LEN], const char *channel, const char *service,
                       const char *address, unsigned char out[SMS_KEY_LEN])
{
	size_t cl = strlen(channel), sl = strlen(service), nl = strlen(address);
	unsigned char *data = xmalloc(cl + 1 + sl + 1 + nl);
	memcpy(data, channel, cl + 1); /* each with its NUL */
	memcpy(data + cl + 1, service, sl + 1);
	memcpy(data + cl + sl + 2, address, nl);
	unsigned len = 0;
	if (!HMAC(EVP_sha256(), key, SMS_KEY_LEN, data, cl + sl + 2 + nl, out, &len))
		abort();
	explicit_bzero(data, cl + sl + 2 + nl);
	free(data);
}

/* ---- the words sent back --------------------------------------------------------- */

struct words {
	const char *lang, *name;
	const char *say[SMS_SAY_COUNT];
};

/* Plain words, short enough for one or two texts.  SMS_SAY_MENU holds the
 * line before the choices. */
static const struct words words[] = {
        {"en",
         "English",
         {"Reply with the number of your language:",
          "Reply YES to agree and talk to a person. Reply STOP to end at any time, DELETE to erase what you "
          "sent.",
          "Nothing has been passed on yet. Reply YES to agree, or STOP.",
          "Thank you. Your messages now reach the team. Reply STOP to end, DELETE to erase.",
          "This conversation has ended. Nothing more will be sent to you. Reply DELETE to erase it.",
          "Your conversation and what you sent are being erased now.",
          "Done. Nothing about you has been kept.",
          "There is no conversation with this number. Nothing will be sent to you.",
          "Your data cannot be deleted just now: the service must keep it for a while to keep someone safe. "
          "Staff know you asked."}},
        {"fr",
         "Français",
         {"Répondez avec le numéro de votre langue :",
          "Répondez OUI pour accepter et parler à une personne. STOP pour arrêter à tout moment, SUPPRIMER "
          "pour effacer vos messages.",
          "Rien n'a encore été transmis. Répondez OUI pour accepter, ou STOP.",
          "Merci. Vos messages parviennent maintenant à l'équipe. STOP pour arrêter, SUPPRIMER pour effacer.",
          "Cette conversation est terminée. Plus rien ne vous sera envoyé. SUPPRIMER pour l'effacer.",
          "Votre conversation et vos messages sont en cours d'effacement.",
          "C'est fait. Rien vous concernant n'a été gardé.",
          "Aucune conversation avec ce numéro. Rien ne vous sera envoyé.",
          "Vos données ne peuvent pas être effacées pour le moment : le service doit les garder un temps "
          "pour "
          "protéger quelqu'un. L'équipe sait que vous l'avez demandé."}},
        {"es",
         "Español",
         {"Responda con el número de su idioma:",
          "Responda SÍ para aceptar y hablar con una persona. STOP para terminar cuando quiera, BORRAR para "
          "borrar lo que envió.",
          "Aún no se ha pasado nada. Responda SÍ para aceptar, o STOP.",
          "Gracias. Sus mensajes llegan ahora al equipo. STOP para terminar, BORRAR para borrar.",
          "Esta conversación ha terminado. No se le enviará nada más. BORRAR para borrarla.",
          "Su conversación y lo que envió se están borrando.", "Hecho. No se ha guardado nada sobre usted.",
          "No hay ninguna conversación con este número. No se le enviará nada.",
          "Sus datos no se pueden borrar por ahora: el servicio debe guardarlos un tiempo para proteger a "
          "alguien. El equipo sabe que lo pidió."}},
        {"ar",
         "العربية",
         {"أرسل رقم لغتك:",
          "أرسل نعم للموافقة والتحدث إلى شخص. أرسل توقف للإنهاء في أي وقت، أو احذف لمسح ما أرسلته.",
          "لم يُرسل أي شيء بعد. أرسل نعم للموافقة، أو توقف.",
          "شكراً. رسائلك تصل الآن إلى الفريق. أرسل توقف للإنهاء، أو احذف للمسح.",
          "انتهت هذه المحادثة. لن يُرسل إليك شيء آخر. أرسل احذف لمسحها.", "جارٍ مسح محادثتك وما أرسلته.",
          "تم. لم يُحفظ أي شيء عنك.", "لا توجد محادثة مع هذا الرقم. لن يُرسل إليك شيء.",
          "لا يمكن حذف بياناتك الآن: على الخدمة الاحتفاظ بها لفترة لحماية شخص ما. يعلم الفريق أنك طلبت "
          "ذلك."}},
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

static const struct words *words_of(const char *lang)
{
	for (size_t i = 0; lang && i < NWORDS; i++) {
		if (strcmp(words[i].lang, lang) == 0)
			return &words[i];
	}
	return &words[0];
}

char *sms_say(enum sms_say what, const char *lang, const char *const *langs, size_t nlangs)
{
	if (what >= SMS_SAY_COUNT)
		what = SMS_SAY_NOTHING;
	if (what != SMS_SAY_MENU)
		return xstrdup(words_of(lang)->say[what]);
	/* The menu: each language's own line, then "1 English / 2 Français ..." */
	char *s = xstrdup("");
	for (size_t i = 0; i < nlangs; i++) {
		char *n = xasprintf("%s%s%s", s, i ? "\n" : "", words_of(langs[i])->say[SMS_SAY_MENU]);
		free(s);
		s = n;
		if (i == 1)
			break; /* two lines at most: the choices say the rest */
	}
	for (size_t i = 0; i < nlangs; i++) {
		char *n = xasprintf("%s%s%zu %s", s, i ? " / " : "\n", i + 1, words_of(langs[i])->name);
		free(s);
		s = n;
	}
	return s;
}

char *sms_twiml(const char *text)
{
	if (!text)
		return xstrdup("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>");
	size_t n = strlen(text), o = 0;
	char *esc = xmalloc(n * 6 + 1);
	for (size_t i = 0; i < n; i++) {
		const char *rep = NULL;
		switch (text[i]) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\'':
			rep = "&apos;";
			break;
		default:
			esc[o++] = text[i];
			continue;
		}
		memcpy(esc + o, rep, strlen(rep));
		o += strlen(rep);
	}
	esc[o] = '\0';
	char *s = xasprintf(
	        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>%s</Message></Response>", esc);
	free(esc);
	return s;
}

char *sms_urlencode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s), o = 0;
	char *out = xmalloc(n * 3 + 1);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		    c == '.' || c == '_' || c == '~') {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return out;
}
