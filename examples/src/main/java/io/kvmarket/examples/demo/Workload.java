package io.kvmarket.examples.demo;

import io.kvmarket.examples.server.GenerationResult;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * The demo's requests, sent one at a time and alternating between two servers: four questions after one long
 * shared system prompt (a library handbook, about 5,800 tokens), then a six-turn chat under the same system
 * prompt in which every turn is the previous prompt, the previous answer and a new user message. The first
 * request computes the handbook and exports it; every later one can import a prefix, mostly from the other
 * server's process.
 */
final class Workload {

    static final int MAX_NEW_TOKENS = 12;

    private static final String HANDBOOK = """
            You are the assistant of the Harbor Point Community Library. Answer questions from staff and
            volunteers using the handbook below.

            HARBOR POINT COMMUNITY LIBRARY - STAFF AND VOLUNTEER HANDBOOK

            1. Opening hours. The main branch opens at nine in the morning from Monday to Saturday and closes at
            eight in the evening on weekdays and at five on Saturday. On Sunday only the reading room is open,
            from noon to four. The library closes on public holidays; a notice goes up at the front desk two
            weeks before each closure.

            2. Opening and closing the building. The first person to arrive switches off the alarm with the
            four-digit code kept by the branch manager, turns on the lights in the order marked on the panel,
            and starts the public computers. The last person to leave walks every room, checks that the study
            rooms and toilets are empty, shuts the windows on the second floor, and sets the alarm. Never leave
            the building with a visitor still inside.

            3. Borrowing. Adults may borrow up to twelve items at a time and children up to six. Books go out
            for three weeks, films and games for one week, and magazines for one week. An item may be renewed
            twice unless another reader has reserved it. Reference books, local history files and the newest
            issue of each magazine stay in the building.

            4. Fines and lost items. The library charges no fines on children's items. Adult items cost ten
            cents a day after the due date, up to a limit of five dollars per item. A lost item is charged at
            its listed price, and the charge is cancelled if the item comes back within ninety days in good
            condition.

            5. Library cards. Anyone who lives, works or studies in the county may hold a card for free. A new
            reader shows a photo identity document and proof of address; a letter or a bill from the last three
            months will do. Cards for children under fourteen need a parent or guardian to sign the form. A
            replacement card costs two dollars.

            6. Volunteers. Volunteers shelve returned items, help readers at the catalog computers, run the
            Saturday story hour, and deliver books to readers who cannot leave their homes. Every volunteer
            signs in and out at the staff desk, wears the green badge, and completes the one-hour safety
            briefing before the first shift. Volunteers do not handle money and do not see reader records.

            7. Privacy. What a reader borrows is nobody else's business. Staff never tell anyone, family members
            and police included, what a reader has borrowed without a court order, which goes straight to the
            branch manager. Screens at the desk face away from the queue, and printed lists of reservations are
            shredded at the end of each day.

            8. Safety. The fire assembly point is the bench by the flagpole across the car park. In a fire
            alarm, staff guide readers out by the nearest exit, volunteers check the toilets and study rooms,
            and nobody goes back in until the fire service says so. The first aid kit is in the staff kitchen,
            and the defibrillator hangs beside the lifts on the ground floor.

            9. Rooms and equipment. The two study rooms may be booked for up to three hours a day by any card
            holder. The meeting room holds forty people and is free for community groups that are open to the
            public. Printing costs ten cents a page in black and fifty cents in color; the scanner is free.

            10. Returns and shelving. Returned items go through the book drop or to the desk, never straight back
            to the shelves. Each item is checked in at the desk computer, which clears it from the reader's
            record and says whether another reader has reserved it. Reserved items go to the hold shelf behind
            the desk with a slip naming the reader; everything else goes on the sorting trolley by section.
            Shelvers work through the trolleys in the order children's, fiction, non-fiction, films and games,
            and they read the shelf labels, not the spine colors, because the colors changed two years ago.

            11. Reservations. A reader may reserve up to ten items at a time at the desk, by telephone, or on
            the library website. When a reserved item arrives, the desk sends a message by email or text, or
            telephones readers who have neither. Items wait on the hold shelf for seven days; after that the
            next reader in the queue gets them. Reservations for items the library does not own go to the
            branch manager, who decides whether to buy the item or borrow it from another library.

            12. Home delivery. Readers who cannot come to the library because of illness, disability or caring
            duties may ask for home delivery. A volunteer visits every second Wednesday with up to twelve items
            chosen from the reader's list, collects the items that are due, and writes the visit in the delivery
            book. Two volunteers always go together, and they never go inside a home when no one they know is
            there. A reader who needs large print or audio books says so on the delivery form.

            13. Children and young people. The children's room is for children under twelve and the adults who
            came with them. Children under eight must have an adult with them at all times. The teen corner is
            kept for readers from twelve to eighteen after three in the afternoon on school days. Staff who see
            a child left alone at closing time telephone the contact number on the child's card, then the branch
            manager, and stay with the child until someone arrives.

            14. Complaints and compliments. Any reader may make a complaint at the desk, by letter, or on the
            website. Staff listen without arguing, write down what happened, and pass the form to the branch
            manager the same day. The manager answers within ten working days. Compliments are written down the
            same way and read out at the monthly staff meeting, because knowing what went well matters as much
            as knowing what went wrong.
            """;

    private static final List<String> QUESTIONS = List.of(
            "How many items may a child borrow at a time, and for how long do films go out?",
            "A reader lost an adult book and found it two months later. What do we charge?",
            "Where do we gather during a fire alarm, and who checks the study rooms?",
            "Can a volunteer look up which books a reader has borrowed?");

    private static final List<String> CHAT = List.of(
            "I am a new volunteer starting on Saturday. What must I do before my first shift?",
            "Thanks. Which tasks will I be allowed to do?",
            "A reader at the desk wants to pay a printing charge. Can I take the money?",
            "What does a black and white page cost, and a color one?",
            "The reader also asks to book a study room for four hours tomorrow. Is that possible?",
            "Last question: I am the last one out tonight. What should I check before I set the alarm?");

    String systemPrompt() {
        return HANDBOOK;
    }

    int requests() {
        return QUESTIONS.size() + CHAT.size();
    }

    /** Sends every request in order, request i to {@code servers[i % 2]}, reporting each as it completes. */
    List<Outcome> run(ServerProcess a, ServerProcess b, Consumer<Outcome> progress) throws IOException,
            InterruptedException {
        ServerProcess[] servers = {a, b};
        List<Outcome> outcomes = new ArrayList<>();
        for (int i = 0; i < QUESTIONS.size(); i++) {
            String prompt = HANDBOOK + turn(QUESTIONS.get(i));
            outcomes.add(send("q" + (i + 1), servers[outcomes.size() % 2], prompt, progress));
        }
        String conversation = HANDBOOK;
        for (int i = 0; i < CHAT.size(); i++) {
            conversation += (i == 0 ? "" : "\n") + turn(CHAT.get(i));
            Outcome o = send("chat" + (i + 1), servers[outcomes.size() % 2], conversation, progress);
            outcomes.add(o);
            conversation += o.result().outputText();
        }
        return outcomes;
    }

    private static String turn(String userMessage) {
        return "User: " + userMessage + "\nAssistant: ";
    }

    private static Outcome send(String id, ServerProcess server, String prompt, Consumer<Outcome> progress)
            throws IOException, InterruptedException {
        GenerationResult result = server.generate(prompt, MAX_NEW_TOKENS);
        Outcome o = new Outcome(id, server.name(), result);
        progress.accept(o);
        return o;
    }

    /** One completed request. */
    record Outcome(String id, String server, GenerationResult result) {
    }
}
